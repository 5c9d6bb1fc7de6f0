"""The command line: run, status, resume, and bad input that writes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alcampaign.cli import app

from conftest import EXAMPLES, small_config_dict

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


def test_enumerate_prints_and_stores(alc_home):
    from alcampaign.stores import CampaignStores, load_job_store

    result = runner.invoke(
        app,
        [
            "enumerate",
            str(EXAMPLES / "li05coo2_layered.cif"),
            "--max-size",
            "4",
            "--concentration",
            "Li=0.5",
            "--name",
            "lco",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "12 structures enumerated" in result.output
    assert "CHGNet energy range" in result.output and "mean" in result.output
    store = load_job_store()
    store.connect()
    stores = CampaignStores.from_job_store(store)
    doc = stores.get_campaign("lco")
    assert doc["state"] == "enumerated" and doc["enumeration"]["n_candidates"] == 12
    cands = stores.candidate_table("lco", ["prescreen", "source", "formula"])
    assert len(cands) == 12 and all(c["prescreen"]["embedding"] for c in cands)
    assert {c["source"]["backend"] for c in cands} == {"icet"}
    energies = [c["prescreen"]["energy_per_atom"] for c in cands]
    assert f"{min(energies):.4f}" in result.output and f"{max(energies):.4f}" in result.output
    status = json.loads(runner.invoke(app, ["status", "lco", "--json"]).output)
    assert status["state"] == "enumerated" and status["n_candidates"] == 12


def test_enumerate_bad_inputs_write_nothing(alc_home, tmp_path):
    ordered = tmp_path / "ordered.cif"
    ordered.write_text(
        (EXAMPLES / "cuau_fcc.cif")
        .read_text()
        .replace("  Au1  Au  0.0  0.0  0.0  0.5\n", "")
        .replace("Cu  0.0  0.0  0.0  0.5", "Cu  0.0  0.0  0.0  1.0")
    )
    americium = tmp_path / "am.cif"
    americium.write_text((EXAMPLES / "cuau_fcc.cif").read_text().replace("Au1  Au", "Am1  Am"))
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("not a cif")
    cases = {
        "no disordered site": [str(ordered)],
        "unknown element": [str(americium)],
        "unreadable": [str(garbage)],
        "missing": [str(tmp_path / "nope.cif")],
        "empty": [str(EXAMPLES / "cuau_fcc.cif"), "--concentration", "Au=0.3"],
        "over the cap": [str(EXAMPLES / "cuau_fcc.cif"), "--max-candidates", "3"],
        "bad option": [str(EXAMPLES / "cuau_fcc.cif"), "--concentration", "Au"],
    }
    for label, args in cases.items():
        result = runner.invoke(app, ["enumerate", *args])
        assert result.exit_code == 2, (label, result.output)
    assert "Am" in runner.invoke(app, ["enumerate", str(americium)]).output
    assert not alc_home.exists()


def test_vasp_config_builds_relaxation_jobs(write_config):
    """The production config: validated, enumerated and its VASP jobs built (not run)."""
    from alcampaign.cli import preflight
    from alcampaign.config import load_config
    from alcampaign.jobs import import_maker

    cfg = load_config(EXAMPLES / "li05coo2_vasp.yaml")
    parent = preflight(cfg)
    maker = import_maker(cfg.oracle.maker, cfg.oracle.kwargs)
    from alcampaign.enumeration import orderings_from_config

    _, orderings = orderings_from_config(cfg, parent)
    job = maker.make(orderings[0].structure)
    assert type(maker).__name__ == "RelaxMaker" and job.name == "relax"
    assert job.maker == maker and job.function.__name__ == "make"


def test_query_filters_and_formats(finished):
    rows = json.loads(
        runner.invoke(app, ["query", "test-cuau", "--format", "json", "--limit", "0"]).output
    )
    assert len(rows) == 29
    labelled = json.loads(
        runner.invoke(app, ["query", "test-cuau", "--state", "labelled", "--format", "json"]).output
    )
    assert len(labelled) == 6 and all(r["source"] == "emt" for r in labelled)
    energies = [r["energy_per_atom"] for r in labelled]
    assert energies == sorted(energies)
    lo, hi = energies[1], energies[3]
    window = json.loads(
        runner.invoke(
            app,
            [
                "query",
                "test-cuau",
                "--state",
                "labelled",
                "--emin",
                str(lo),
                "--emax",
                str(hi),
                "--format",
                "json",
            ],
        ).output
    )
    assert [r["energy_per_atom"] for r in window] == energies[1:4]
    cuau = json.loads(
        runner.invoke(app, ["query", "test-cuau", "--formula", "CuAu", "--format", "json"]).output
    )
    assert cuau and {r["formula"] for r in cuau} == {"CuAu"}
    first = json.loads(
        runner.invoke(app, ["query", "test-cuau", "--iteration", "0", "--format", "json"]).output
    )
    assert len(first) == 4 and {r["iteration"] for r in first} == {0}
    csv_out = runner.invoke(app, ["query", "test-cuau", "--state", "labelled", "--format", "csv"])
    assert csv_out.output.splitlines()[0].startswith("candidate_id,formula")
    assert len(csv_out.output.splitlines()) == 7
    assert "test-cuau" in runner.invoke(app, ["query", "test-cuau"]).output
    assert runner.invoke(app, ["query", "test-cuau", "--state", "weird"]).exit_code == 2
