"""An oracle outside the workflow: the test plays the person with a cluster account."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from ase.io import write as ase_write
from atomate2.ase.jobs import EmtRelaxMaker
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from typer.testing import CliRunner

from alcampaign.campaign.external import Answer, AnswerError, check_answer, read_answers
from alcampaign.cli import app
from alcampaign.store.facade import CampaignStores, load_job_store

from conftest import small_config_dict

runner = CliRunner()
ORACLE_KWARGS = {"relax_cell": True, "steps": 200, "relax_kwargs": {"fmax": 0.02}}


def _stores() -> CampaignStores:
    store = load_job_store()
    store.connect()
    return CampaignStores.from_job_store(store)


def _relax(structure: Structure):
    """What the outside oracle computes: the same EMT relaxation as the workflow's."""
    result = EmtRelaxMaker(**ORACLE_KWARGS).run_ase(structure)
    return result.final_mol_or_struct, result.trajectory.frame_properties[-1]["energy"]


def _export(name: str, out: Path, fmt: str) -> dict:
    result = runner.invoke(app, ["export", name, "--out", str(out), "--format", fmt])
    assert result.exit_code == 0, result.output
    return json.loads((out / "manifest.json").read_text())


def _question(folder: Path, q: dict) -> Structure:
    """The exported structure of a question, whatever the format."""
    if q["file"].endswith(".extxyz"):
        from ase.io import read

        frame = next(
            a
            for a in read(folder / q["file"], index=":")
            if a.info["candidate_id"] == q["candidate_id"]
        )
        return AseAtomsAdaptor.get_structure(frame)
    return Structure.from_file(folder / q["file"])


def _answer_extxyz(manifest: dict, folder: Path, path: Path, ids: list[str]) -> None:
    frames = []
    for q in manifest["questions"]:
        if q["candidate_id"] not in ids:
            continue
        final, energy = _relax(_question(folder, q))
        atoms = AseAtomsAdaptor.get_atoms(final)
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms.calc = SinglePointCalculator(atoms, energy=energy)
        atoms.info["candidate_id"] = q["candidate_id"]
        frames.append(atoms)
    ase_write(path, frames, format="extxyz")


def _answer_csv(manifest: dict, folder: Path, path: Path, ids: list[str]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["candidate_id", "energy_per_atom"])
        writer.writeheader()
        for q in manifest["questions"]:
            if q["candidate_id"] in ids:
                final, energy = _relax(_question(folder, q))
                writer.writerow(
                    {"candidate_id": q["candidate_id"], "energy_per_atom": energy / len(final)}
                )


@pytest.mark.slow
def test_round_trip_reaches_the_same_labels_as_the_workflow_oracle(
    alc_home, write_config, tmp_path
):
    base = small_config_dict(stopping={"max_oracle_calls": 8})
    base["oracle"] = {
        "maker": "atomate2.ase.jobs.EmtRelaxMaker",
        "kwargs": ORACLE_KWARGS,
        "fidelity": "emt",
    }
    inside = write_config({**base, "name": "inside"}, "inside.yaml")
    assert runner.invoke(app, ["run", str(inside)]).exit_code == 0
    outside = write_config(
        {**base, "name": "outside", "oracle": {"maker": "external", "fidelity": "emt"}},
        "outside.yaml",
    )
    result = runner.invoke(app, ["run", str(outside)])
    assert result.exit_code == 0 and "waits for external answers" in result.output
    stores = _stores()
    assert stores.get_campaign("outside")["state"] == "waiting"

    for round_ in range(10):
        doc = stores.get_campaign("outside")
        if doc["state"] == "stopped":
            break
        folder = tmp_path / f"round{round_}"
        manifest = _export("outside", folder, ["cif", "extxyz", "poscar"][round_ % 3])
        ids = [q["candidate_id"] for q in manifest["questions"]]
        assert all(
            q["fidelity"] == "emt" and q["campaign"] == "outside" for q in manifest["questions"]
        )
        # Answers arrive in parts, out of order, one of them twice, as extxyz and CSV.
        first, rest = ids[len(ids) // 2 :], ids[: len(ids) // 2]
        _answer_extxyz(manifest, folder, tmp_path / f"a{round_}.extxyz", first)
        _answer_csv(manifest, folder, tmp_path / f"b{round_}.csv", rest)
        for path in [f"a{round_}.extxyz", f"a{round_}.extxyz"]:
            assert runner.invoke(app, ["ingest", "outside", str(tmp_path / path)]).exit_code == 0
        ok = runner.invoke(app, ["ingest", "outside", str(tmp_path / f"b{round_}.csv")])
        assert ok.exit_code == 0 and "0 questions still open" in ok.output
        assert runner.invoke(app, ["resume", "outside"]).exit_code == 0
    doc = stores.get_campaign("outside")
    assert doc["state"] == "stopped" and doc["stop_reason"]

    def labels(name):
        return {lab["candidate_id"]: lab["energy_per_atom"] for lab in stores.get_labels(name)}

    inside_labels, outside_labels = labels("inside"), labels("outside")
    assert set(inside_labels) == set(outside_labels)
    for cid, e in inside_labels.items():
        assert outside_labels[cid] == pytest.approx(e, abs=1e-9)


def test_wrong_answers_are_rejected_and_nothing_is_stored(alc_home, write_config, tmp_path):
    cfg = small_config_dict(
        oracle={"maker": "external", "fidelity": "emt"}, initial_design={"n_initial": 3}
    )
    assert runner.invoke(app, ["run", str(write_config(cfg))]).exit_code == 0
    stores = _stores()
    manifest = _export("test-cuau", tmp_path / "q", "extxyz")
    ids = [q["candidate_id"] for q in manifest["questions"]]
    pool_id = next(
        d["candidate_id"]
        for d in stores.candidate_table("test-cuau", ["state"])
        if d["state"] == "pool"
    )
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(f"candidate_id,energy_per_atom\n{ids[0]},-0.01\nnope,-0.02\n")
    missing = tmp_path / "missing.csv"
    missing.write_text(f"candidate_id,energy_per_atom\n{ids[0]},\n")
    unasked = tmp_path / "unasked.json"
    unasked.write_text(json.dumps([{"candidate_id": pool_id, "energy_per_atom": -0.01}]))
    wrong_comp = tmp_path / "wrong.extxyz"
    structure = Structure.from_dict(
        stores.candidate_table("test-cuau", ["structure"], {"candidate_id": ids[0]})[0]["structure"]
    )
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.symbols[0] = "Ag"
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = SinglePointCalculator(atoms, energy=-1.0)
    atoms.info["candidate_id"] = ids[0]
    ase_write(wrong_comp, atoms, format="extxyz")
    for path, message in [
        (bad_csv, "unknown candidate id"),
        (missing, "no energy"),
        (unasked, "was not asked"),
        (wrong_comp, "composition"),
        (tmp_path / "absent.csv", "no such file"),
    ]:
        result = runner.invoke(app, ["ingest", "test-cuau", str(path)])
        assert result.exit_code == 2 and message in result.output, (path, result.output)
        assert path.name in result.output
    assert stores.get_labels("test-cuau") == []
    assert stores.candidates.count({"campaign": "test-cuau", "state": "requested"}) == 3
    # Partial answers: the campaign continues from what has arrived.
    good = tmp_path / "good.csv"
    good.write_text(f"candidate_id,energy_per_atom\n{ids[0]},-0.01\n{ids[1]},-0.02\n{ids[2]},0.0\n")
    assert runner.invoke(app, ["ingest", "test-cuau", str(good)]).exit_code == 0
    assert runner.invoke(app, ["ingest", "test-cuau", str(good)]).exit_code == 0  # twice: no-op
    assert len(stores.get_labels("test-cuau")) == 3
    assert runner.invoke(app, ["resume", "test-cuau"]).exit_code == 0
    doc = stores.get_campaign("test-cuau")
    assert doc["state"] == "waiting" and doc["history"][-1]["acquired"]
    # Resuming with nothing new keeps waiting and asks nothing more.
    n_requested = stores.candidates.count({"campaign": "test-cuau", "state": "requested"})
    assert runner.invoke(app, ["resume", "test-cuau"]).exit_code == 0
    assert stores.candidates.count({"campaign": "test-cuau", "state": "requested"}) == n_requested


def test_check_answer_structure_match():
    from alcampaign.structures.enumeration import enumerate_orderings, load_parent

    from conftest import EXAMPLES

    parent = load_parent(EXAMPLES / "cuau_fcc.cif")
    same = [
        o.structure
        for o in enumerate_orderings(parent, 4, 4)
        if o.structure.composition.reduced_formula == "CuAu"
    ]
    a, b = same[0], same[1]
    assert check_answer(Answer("x", "f", energy=-4.0, structure=a), a) == pytest.approx(-1.0)
    with pytest.raises(AnswerError, match="does not match"):
        check_answer(Answer("x", "f", energy=-4.0, structure=b), a)
    with pytest.raises(AnswerError, match="no energy"):
        check_answer(Answer("x", "f"), a)
    with pytest.raises(AnswerError, match="no such file"):
        read_answers(Path("/nonexistent/answers.csv"))


def test_mixed_mode_cheap_maker_in_the_workflow_dear_oracle_outside(
    alc_home, write_config, tmp_path
):
    cfg = small_config_dict(
        acquisition={"rule": "cost_aware", "batch_size": 4},
        initial_design={"n_initial": 4},
        oracle={
            "maker": "external",
            "fidelity": "dft",
            "cost": 1.0,
            "cheap": {
                "maker": "atomate2.ase.jobs.EmtRelaxMaker",
                "fidelity": "emt",
                "kwargs": ORACLE_KWARGS,
                "cost": 0.01,
            },
        },
        stopping={"max_oracle_calls": 8},
    )
    assert runner.invoke(app, ["run", str(write_config(cfg))]).exit_code == 0
    stores = _stores()
    manifest = _export("test-cuau", tmp_path / "q0", "extxyz")
    ids = [q["candidate_id"] for q in manifest["questions"]]
    _answer_extxyz(manifest, tmp_path / "q0", tmp_path / "a0.extxyz", ids)
    assert runner.invoke(app, ["ingest", "test-cuau", str(tmp_path / "a0.extxyz")]).exit_code == 0
    result = runner.invoke(app, ["resume", "test-cuau"])
    assert result.exit_code == 0, result.output
    labels = stores.get_labels("test-cuau")
    cheap = [lab for lab in labels if lab["fidelity"] == "emt"]
    dear = [lab for lab in labels if lab["fidelity"] == "dft"]
    assert len(dear) == 4 and all(lab["oracle"]["maker"] == "external" for lab in dear)
    # The cheap questions ran as EMT jobs inside the workflow; dear ones wait outside.
    assert cheap and all(lab["job_uuid"] for lab in cheap)
    doc = stores.get_campaign("test-cuau")
    assert doc["state"] in ("waiting", "stopped")
    if doc["state"] == "waiting":
        assert stores.candidates.count({"campaign": "test-cuau", "state": "requested"}) > 0
