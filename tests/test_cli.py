"""The command line: run, status, resume, and bad input that writes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alcampaign.cli import app

from conftest import small_config_dict

runner = CliRunner()


def _snapshot(home: Path) -> dict[str, str]:
    if not home.exists():
        return {}
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def finished(alc_home, write_config):
    """A small campaign run to its stop through the CLI on the embedded store."""
    path = write_config(small_config_dict(stopping={"max_oracle_calls": 6}))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    return path


def test_run_then_status_json(finished):
    result = runner.invoke(app, ["status", "test-cuau", "--json"])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.output)
    assert rec["name"] == "test-cuau" and rec["state"] == "stopped"
    assert rec["n_oracle_calls"] == 6 and rec["stop_reason"]
    assert set(rec["metrics"]) >= {"rmse", "mae", "ece", "max_std_residual"}
    assert rec["metrics"]["rmse"] > 0 and isinstance(rec["iteration"], int)
    # Latest campaign by default, and the table form.
    assert json.loads(runner.invoke(app, ["status", "--json"]).output)["name"] == "test-cuau"
    table = runner.invoke(app, ["status"])
    assert table.exit_code == 0 and "stopped" in table.output
    # Resuming a stopped campaign is harmless.
    assert runner.invoke(app, ["resume", "test-cuau"]).exit_code == 0


def test_bad_inputs_exit_2_and_leave_the_store_unchanged(
    finished, alc_home, write_config, tmp_path
):
    before = _snapshot(alc_home)
    bad_cif = tmp_path / "bad.cif"
    bad_cif.write_text("data_x\n_cell_length_a oops\n")
    cases = {
        "missing config": [str(tmp_path / "missing.yaml")],
        "malformed yaml": [str(write_config({"name": "x", "system": "["}, "m.yaml"))],
        "bad field": [
            str(write_config(small_config_dict(acquisition={"batch_size": -1}), "f.yaml"))
        ],
        "unknown field": [str(write_config(small_config_dict(surprise=1), "u.yaml"))],
        "bad structure": [
            str(
                write_config(
                    small_config_dict(system={"structure": str(bad_cif)}, name="other"), "s.yaml"
                )
            )
        ],
        "bad oracle": [
            str(
                write_config(
                    small_config_dict(oracle={"maker": "nowhere.Maker"}, name="other"), "o.yaml"
                )
            )
        ],
        "empty enumeration cap": [
            str(
                write_config(
                    small_config_dict(enumeration={"max_candidates": 3}, name="other"), "e.yaml"
                )
            )
        ],
        "existing name": [str(finished)],
        "missing store file": [str(finished), "--name", "n2", "--store", str(tmp_path / "no.yaml")],
    }
    for label, args in cases.items():
        result = runner.invoke(app, ["run", *args])
        assert result.exit_code == 2, (label, result.output)
        assert "error" in result.output.lower(), label
    result = runner.invoke(
        app, ["run", str(write_config(small_config_dict(acquisition={"batch_size": 0}), "g.yaml"))]
    )
    assert "acquisition.batch_size" in result.output
    assert _snapshot(alc_home) == before


def test_nothing_written_for_a_bad_config_on_a_fresh_machine(alc_home, write_config):
    result = runner.invoke(app, ["run", str(write_config(small_config_dict(seed="x")))])
    assert result.exit_code == 2 and "seed" in result.output
    assert not alc_home.exists()


def test_status_and_resume_of_unknown_campaign(alc_home):
    assert runner.invoke(app, ["status", "nope"]).exit_code == 1
    assert runner.invoke(app, ["resume", "nope"]).exit_code == 2
