"""The command line: run, status, resume, and bad input that writes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from alcampaign.cli import app

from conftest import EXAMPLES, STORES, small_config_dict

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


def _cif(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _store_file(tmp_path: Path, name: str, spec) -> str:
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return str(path)


def test_bad_inputs_exit_2_and_leave_the_store_unchanged(
    finished, alc_home, write_config, tmp_path, monkeypatch
):
    """The bad-input catalogue: each input gets exit code 2 and an error that names
    what to fix, and the stored campaign is byte-for-byte unchanged."""
    before = _snapshot(alc_home)
    cuau = (EXAMPLES / "cuau_fcc.cif").read_text()

    def config(label: str, **overrides) -> str:
        cfg = small_config_dict(**{"name": "other", **overrides})
        return str(write_config(cfg, f"{label.replace(' ', '_')}.yaml"))

    memory = yaml.safe_load((STORES / "memory.yaml").read_text())
    no_campaigns = {**memory, "additional_stores": dict(memory["additional_stores"])}
    del no_campaigns["additional_stores"]["campaigns"]
    unknown_type = {**memory, "docs_store": {"type": "NoSuchStore", "collection_name": "d"}}
    monkeypatch.delenv("ALCAMPAIGN_MONGODB_URI", raising=False)
    unreachable = _store_file(
        tmp_path,
        "unreachable.yaml",
        (STORES / "mongodb.yaml")
        .read_text()
        .replace(
            "${ALCAMPAIGN_MONGODB_URI}", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300"
        ),
    )
    # (arguments, a word the error must contain)
    cases = {
        # -- configs
        "missing config": ([str(tmp_path / "missing.yaml")], "missing.yaml"),
        "malformed yaml": ([_cif(tmp_path, "m.yaml", "name: x\nsystem: [\n")], "yaml"),
        "config not a mapping": ([_cif(tmp_path, "l.yaml", "- a\n- b\n")], "mapping"),
        "missing name": ([config("missing name", name=None)], "name"),
        "unknown field": ([config("unknown field", surprise=1)], "surprise"),
        "negative batch": ([config("bad batch", acquisition={"batch_size": -1})], "batch_size"),
        "unknown rule": ([config("bad rule", acquisition={"rule": "best"})], "rule"),
        "negative budget": (
            [config("bad budget", stopping={"max_oracle_calls": -1})],
            "max_oracle_calls",
        ),
        "oracle not importable": (
            [config("bad oracle", oracle={"maker": "nowhere.Maker"})],
            "nowhere",
        ),
        "oracle not a Maker": ([config("not maker", oracle={"maker": "pathlib.Path"})], "Maker"),
        "oracle rejects kwargs": (
            [config("bad kwargs", oracle={"kwargs": {"no_such_option": 1}})],
            "no_such_option",
        ),
        "element the oracle cannot compute": (
            [config("emt li", system={"structure": str(EXAMPLES / "li05coo2_layered.cif")})],
            "Li",
        ),
        "existing name": ([str(finished)], "resume"),
        # -- structure files
        "missing structure": (
            [config("no cif", system={"structure": str(tmp_path / "x.cif")})],
            "x.cif",
        ),
        "malformed cif": (
            [
                config(
                    "bad cif",
                    system={"structure": _cif(tmp_path, "b.cif", "data_x\n_cell_length_a oops\n")},
                )
            ],
            "b.cif",
        ),
        "no disordered site": (
            [
                config(
                    "ordered",
                    system={
                        "structure": _cif(
                            tmp_path,
                            "o.cif",
                            cuau.replace("  Au1  Au  0.0  0.0  0.0  0.5\n", "").replace(
                                "Cu  0.0  0.0  0.0  0.5", "Cu  0.0  0.0  0.0  1.0"
                            ),
                        )
                    },
                )
            ],
            "disorder",
        ),
        "occupancy above 1": (
            [
                config(
                    "over",
                    system={
                        "structure": _cif(
                            tmp_path,
                            "over.cif",
                            cuau.replace("Au  0.0  0.0  0.0  0.5", "Au  0.0  0.0  0.0  0.7"),
                        )
                    },
                )
            ],
            "occupanc",
        ),
        "empty enumeration": (
            [config("empty", enumeration={"concentrations": {"Au": 0.3}})],
            "empty",
        ),
        "enumeration over the cap": (
            [config("cap", enumeration={"max_candidates": 3})],
            "max_candidates",
        ),
        # -- store files
        "missing store file": (
            [str(finished), "--name", "n2", "--store", str(tmp_path / "no.yaml")],
            "no.yaml",
        ),
        "malformed store file": (
            [
                str(finished),
                "--name",
                "n2",
                "--store",
                _store_file(tmp_path, "s1.yaml", "docs_store: [\n"),
            ],
            "s1.yaml",
        ),
        "store without docs_store": (
            [str(finished), "--name", "n2", "--store", _store_file(tmp_path, "s2.yaml", {"a": 1})],
            "docs_store",
        ),
        "store lacking a campaign collection": (
            [
                str(finished),
                "--name",
                "n2",
                "--store",
                _store_file(tmp_path, "s3.yaml", no_campaigns),
            ],
            "campaigns",
        ),
        "unknown store type": (
            [
                str(finished),
                "--name",
                "n2",
                "--store",
                _store_file(tmp_path, "s4.yaml", unknown_type),
            ],
            "NoSuchStore",
        ),
        "unset credential variable": (
            [str(finished), "--name", "n2", "--store", str(STORES / "mongodb.yaml")],
            "ALCAMPAIGN_MONGODB_URI",
        ),
        "unreachable database": (
            [str(finished), "--name", "n2", "--store", unreachable],
            "reachable",
        ),
    }
    assert len(cases) >= 20
    for label, (args, word) in cases.items():
        result = runner.invoke(app, ["run", *args])
        assert result.exit_code == 2, (label, result.output)
        assert "error" in result.output.lower(), (label, result.output)
        assert word.lower() in result.output.lower(), (label, word, result.output)
        assert _snapshot(alc_home) == before, label
    # Other commands on the stored campaign.
    others = {
        "resume unknown": ["resume", "nope"],
        "query bad state": ["query", "test-cuau", "--state", "weird"],
        "ingest unknown file": ["ingest", "test-cuau", str(tmp_path / "answers.csv")],
    }
    for label, args in others.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (label, result.output)
        assert _snapshot(alc_home) == before, label


def test_nothing_written_for_a_bad_config_on_a_fresh_machine(alc_home, write_config):
    result = runner.invoke(app, ["run", str(write_config(small_config_dict(seed="x")))])
    assert result.exit_code == 2 and "seed" in result.output
    assert not alc_home.exists()


def test_every_command_exits_2_for_an_unknown_campaign(alc_home, tmp_path):
    """One CampaignNotFound, one exit code (2) and one message, whatever the command."""
    assert runner.invoke(app, ["status"]).exit_code == 2  # an empty store
    for args in (
        ["status", "nope"],
        ["status", "nope", "--json"],
        ["resume", "nope"],
        ["query", "nope"],
        ["report", "nope", "--out", str(tmp_path / "r")],
        ["export", "nope", "--out", str(tmp_path / "e")],
        ["ingest", "nope", str(tmp_path / "answers.csv")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "no campaign named 'nope'" in result.output, (args, result.output)
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_enumerate_prints_and_stores(alc_home):
    from alcampaign.store.facade import CampaignStores, load_job_store

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
    from alcampaign.campaign.jobs import import_maker
    from alcampaign.campaign.preflight import preflight
    from alcampaign.config import load_config

    cfg = load_config(EXAMPLES / "li05coo2_vasp.yaml")
    parent = preflight(cfg)
    maker = import_maker(cfg.oracle.maker, cfg.oracle.kwargs)
    from alcampaign.structures.enumeration import orderings_from_config

    _, orderings = orderings_from_config(cfg, parent)
    job = maker.make(orderings[0].structure)
    assert type(maker).__name__ == "RelaxMaker" and job.name == "relax"
    assert job.maker == maker and job.function.__name__ == "make"


def _query(*args: str) -> list[dict]:
    result = runner.invoke(app, ["query", "test-cuau", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_query_filters_and_formats(finished):
    from alcampaign.campaign.query import COLUMNS

    rows = _query("--limit", "0")
    assert len(rows) == 29 and all(list(r) == list(COLUMNS) for r in rows)
    labelled = _query("--state", "labelled")
    assert len(labelled) == 6
    energies = [r["label_energy_per_atom"] for r in labelled]
    assert energies == sorted(energies)
    lo, hi = energies[1], energies[3]
    window = _query("--state", "labelled", "--emin", str(lo), "--emax", str(hi))
    assert [r["label_energy_per_atom"] for r in window] == energies[1:4]
    cuau = _query("--formula", "CuAu")
    assert cuau and {r["formula"] for r in cuau} == {"CuAu"}
    first = _query("--iteration", "0")
    assert len(first) == 4 and {r["iteration"] for r in first} == {0}
    csv_out = runner.invoke(app, ["query", "test-cuau", "--state", "labelled", "--format", "csv"])
    assert csv_out.output.splitlines()[0] == ",".join(COLUMNS)
    assert len(csv_out.output.splitlines()) == 7
    assert "test-cuau" in runner.invoke(app, ["query", "test-cuau"]).output
    for bad in (["--state", "weird"], ["--energy", "weird"], ["--format", "xml"]):
        assert runner.invoke(app, ["query", "test-cuau", *bad]).exit_code == 2, bad


def test_query_keeps_oracle_chgnet_and_model_energies_apart(finished):
    """Every candidate gets the current model's prediction (the closed form of the
    stored posterior at its features); the oracle's label only where it answered;
    the CHGNet energy only where a prescreen ran (none here); never one for another."""
    from alcampaign.store.facade import open_stores

    _, stores = open_stores()
    labels = {lab["candidate_id"]: lab for lab in stores.get_labels("test-cuau", "emt")}
    model = stores.latest_model("test-cuau")
    features = {
        d["candidate_id"]: np.array(d["features"])
        for d in stores.candidate_table("test-cuau", ["features"])
    }
    rows = _query("--limit", "0", "--energy", "predicted")
    assert len(rows) == 29
    for r in rows:
        x = features[r["candidate_id"]]
        mean = x @ np.array(model["mean"]) + model["offset"]
        std = np.sqrt(x @ np.array(model["covariance"]) @ x + 1 / model["beta"])
        std *= (model.get("calibration") or {}).get("scale", 1.0)  # recalibrated
        assert r["predicted_energy_per_atom"] == pytest.approx(mean, rel=1e-9)
        assert r["predicted_std"] == pytest.approx(std, rel=1e-9)
        lab = labels.get(r["candidate_id"])
        assert r["label_energy_per_atom"] == (lab["energy_per_atom"] if lab else None)
        assert r["chgnet_energy_per_atom"] is None
    predicted = [r["predicted_energy_per_atom"] for r in rows]
    assert predicted == sorted(predicted)
    low = _query("--energy", "predicted", "--emax", str(predicted[4]))
    assert [r["predicted_energy_per_atom"] for r in low] == predicted[:5]
    table = runner.invoke(app, ["query", "test-cuau", "--limit", "3"]).output
    assert f"model of iteration {model['iteration']}" in table
