"""Questions for an oracle outside the workflow: write them out, read the answers back.

``export_requests`` writes each requested structure (CIF, POSCAR or extended XYZ) with a
``manifest.json`` that says, per question, the candidate id, campaign, iteration,
fidelity and what answer is expected. ``read_answers`` reads answers from

* a VASP calculation directory (atomate2/emmet's ``TaskDoc.from_directory``); the
  candidate id is the directory name, as exported, or the ``candidate_id`` in an
  ``alcampaign.json`` file inside it;
* any file ASE can read with energies (extended XYZ, ASE trajectories, ...), the
  candidate id in each frame's ``info["candidate_id"]`` (exported extxyz files carry
  it already);
* a CSV or JSON table with ``candidate_id`` and ``energy`` (eV per cell) or
  ``energy_per_atom``.

``check_answer`` compares an answer with the question it claims to answer: known
candidate id, same composition, and (when the answer has a structure) the same
structure within a tolerance. Every failure is an :class:`AnswerError` naming the file.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

FORMATS = {"cif": "cif", "poscar": "POSCAR", "extxyz": "extxyz"}


class AnswerError(ValueError):
    """An answer that cannot be accepted; the message names the file and the problem."""


@dataclass
class Answer:
    """One oracle answer read from a file.

    Attributes
    ----------
    candidate_id
        The question it answers.
    source
        The file or directory it came from.
    energy
        Total energy (eV) of ``structure``, or ``None`` if only a per-atom energy is given.
    energy_per_atom
        Energy per atom (eV/atom), when given directly.
    structure
        The final (relaxed) structure, if the answer has one.
    forces, stress
        Optional.
    """

    candidate_id: str
    source: str
    energy: float | None = None
    energy_per_atom: float | None = None
    structure: Structure | None = None
    forces: list | None = None
    stress: list | None = None
    extra: dict = field(default_factory=dict)


# -- export --------------------------------------------------------------------------


def export_requests(
    requests: list[dict], campaign: str, fidelity: str, out: Path, fmt: str = "cif"
) -> Path:
    """Write requested structures and a manifest a person or a script can follow.

    Parameters
    ----------
    requests
        Candidate documents with ``candidate_id``, ``structure`` and ``acquisition``.
    campaign, fidelity
        Recorded in the manifest.
    out
        Folder to write (created).
    fmt
        ``cif`` (one file per candidate), ``poscar`` (one folder per candidate holding a
        POSCAR, ready for a VASP run) or ``extxyz`` (one file, candidate ids in the
        frames' info).

    Returns
    -------
    Path
        The manifest file.
    """
    from ase.io import write as ase_write
    from pymatgen.io.ase import AseAtomsAdaptor

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    entries, frames = [], []
    for doc in requests:
        cid = doc["candidate_id"]
        structure = Structure.from_dict(doc["structure"])
        if fmt == "cif":
            path = out / f"{cid}.cif"
            structure.to(filename=str(path))
        elif fmt == "poscar":
            (out / cid).mkdir(exist_ok=True)
            path = out / cid / "POSCAR"
            structure.to(filename=str(path), fmt="poscar")
            (out / cid / "alcampaign.json").write_text(
                json.dumps({"campaign": campaign, "candidate_id": cid})
            )
        else:
            path = out / "requested.extxyz"
            atoms = AseAtomsAdaptor.get_atoms(structure)
            atoms.info["candidate_id"] = cid
            frames.append(atoms)
        acquisition = doc.get("acquisition") or {}
        entries.append(
            {
                "candidate_id": cid,
                "campaign": campaign,
                "iteration": acquisition.get("iteration"),
                "fidelity": fidelity,
                "file": str(path.relative_to(out)),
                "formula": structure.composition.reduced_formula,
                "n_sites": len(structure),
            }
        )
    if frames:
        ase_write(out / "requested.extxyz", frames, format="extxyz")
    return _write_manifest(out, campaign, fidelity, entries)


def _write_manifest(out: Path, campaign: str, fidelity: str, entries: list[dict]) -> Path:
    """``manifest.json``: the questions and what answer each expects."""
    manifest = out / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "campaign": campaign,
                "fidelity": fidelity,
                "expected_answer": (
                    "For each candidate: the total energy in eV of the relaxed structure (and, if "
                    "available, its forces in eV/A and stress), at the fidelity named above. "
                    "Return any of: the VASP calculation directory (named by candidate id, as "
                    "exported with --format poscar); an extended XYZ file whose frames carry "
                    "info candidate_id and the energy (and forces); or a CSV/JSON table with "
                    "columns candidate_id and energy (eV per cell) or energy_per_atom. Then run "
                    f"'alcampaign ingest {campaign} PATH...' and 'alcampaign resume {campaign}'."
                ),
                "questions": entries,
            },
            indent=1,
        )
    )
    return manifest


# -- reading answers -----------------------------------------------------------------


def read_answers(path: Path) -> list[Answer]:
    """Read every answer in a file or calculation directory.

    Raises
    ------
    AnswerError
        The path cannot be read, or an answer in it lacks an id or an energy.
    """
    path = Path(path)
    if not path.exists():
        raise AnswerError(f"{path}: no such file or directory")
    if path.is_dir():
        return [_read_vasp_dir(path)]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_table(path, _csv_rows(path))
    if suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AnswerError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(rows, dict):
            rows = rows.get("answers", [rows])
        return _read_table(path, rows)
    return _read_ase(path)


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _float(value, what: str, path: Path) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise AnswerError(f"{path}: {what} {value!r} is not a number") from None
    if not np.isfinite(out):
        raise AnswerError(f"{path}: {what} is {out}")
    return out


def _read_table(path: Path, rows: list[dict]) -> list[Answer]:
    answers = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("candidate_id"):
            raise AnswerError(f"{path}: row {i + 1} has no candidate_id")
        energy = _float(row.get("energy"), f"row {i + 1} energy", path)
        per_atom = _float(row.get("energy_per_atom"), f"row {i + 1} energy_per_atom", path)
        if energy is None and per_atom is None:
            raise AnswerError(
                f"{path}: row {i + 1} ({row['candidate_id']}) has no energy "
                "(give energy in eV per cell or energy_per_atom)"
            )
        answers.append(Answer(str(row["candidate_id"]).strip(), str(path), energy, per_atom))
    if not answers:
        raise AnswerError(f"{path}: holds no answers")
    return answers


def _read_ase(path: Path) -> list[Answer]:
    from ase.io import read as ase_read
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = ase_read(path, index=":")
    except Exception as exc:  # ASE raises many kinds of errors on a bad file
        raise AnswerError(f"{path}: could not read it with ASE ({exc})") from None
    answers = []
    for i, atoms in enumerate(frames):
        cid = atoms.info.get("candidate_id")
        if not cid:
            raise AnswerError(f"{path}: frame {i} has no candidate_id in its info")
        try:
            energy = atoms.get_potential_energy()
        except Exception:
            raise AnswerError(f"{path}: frame {i} ({cid}) has no energy") from None
        forces = stress = None
        try:
            forces = atoms.get_forces().tolist()
        except Exception:
            pass
        try:
            stress = atoms.get_stress(voigt=False).tolist()
        except Exception:
            pass
        answers.append(
            Answer(
                str(cid),
                str(path),
                float(energy),
                None,
                AseAtomsAdaptor.get_structure(atoms),
                forces,
                stress,
            )
        )
    return answers


def _read_vasp_dir(path: Path) -> Answer:
    meta = path / "alcampaign.json"
    cid = json.loads(meta.read_text())["candidate_id"] if meta.exists() else path.name
    try:
        from emmet.core.tasks import TaskDoc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            task = TaskDoc.from_directory(path)
    except Exception as exc:
        raise AnswerError(f"{path}: not a readable VASP calculation ({exc})") from None
    out = task.output
    if out is None or out.energy is None:
        raise AnswerError(f"{path}: the VASP calculation has no final energy")
    return Answer(
        cid,
        str(path),
        float(out.energy),
        None,
        out.structure,
        getattr(out, "forces", None),
        getattr(out, "stress", None),
    )


# -- checking ------------------------------------------------------------------------


def check_answer(answer: Answer, question: Structure, tolerance: dict | None = None) -> float:
    """Check an answer against its question; return the energy per atom.

    Raises
    ------
    AnswerError
        Composition differs, the structure does not match within the tolerance, or
        the energy is missing.
    """
    where = f"{answer.source} ({answer.candidate_id})"
    if answer.structure is not None:
        if (
            answer.structure.composition.reduced_composition
            != question.composition.reduced_composition
        ):
            raise AnswerError(
                f"{where}: composition {answer.structure.composition.reduced_formula} does not "
                f"match the question's {question.composition.reduced_formula}"
            )
        from pymatgen.analysis.structure_matcher import StructureMatcher

        tol = {"ltol": 0.3, "stol": 0.5, "angle_tol": 10, **(tolerance or {})}
        if not StructureMatcher(primitive_cell=False, scale=True, **tol).fit(
            answer.structure, question
        ):
            raise AnswerError(
                f"{where}: the structure does not match the question within tolerance {tol}"
            )
        n_sites = len(answer.structure)
    else:
        n_sites = len(question)
    if answer.energy_per_atom is not None:
        return answer.energy_per_atom
    if answer.energy is None:
        raise AnswerError(f"{where}: no energy")
    return answer.energy / n_sites


# -- with the stores (``alcampaign export`` / ``alcampaign ingest``) --------------------


@dataclass
class Exported:
    """What :func:`export_questions` wrote: how many questions, the manifest (``None``
    when there were none) and the campaign's state."""

    n_questions: int
    manifest: Path | None
    state: str | None


def export_questions(stores, name: str, out: Path, fmt: str = "cif") -> Exported:
    """Write a campaign's open external questions (candidates ``requested``) with a
    manifest (:func:`export_requests`).

    Raises
    ------
    CampaignNotFound
        No campaign of that name.
    ValueError
        An unknown format.
    """
    from alcampaign.config import CampaignConfig

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    doc = stores.require_campaign(name)
    requests = stores.candidate_table(name, ["structure", "acquisition"], {"state": "requested"})
    if not requests:
        return Exported(0, None, doc.get("state"))
    fidelity = CampaignConfig.model_validate(doc["config"]).oracle.fidelity
    manifest = export_requests(requests, name, fidelity, out, fmt)
    return Exported(len(requests), manifest, doc.get("state"))


@dataclass
class Ingested:
    """What :func:`ingest_answers` did.

    Attributes
    ----------
    stored
        Answers stored now.
    skipped
        Answers already stored (ingesting twice changes nothing).
    open_questions
        External questions still without an answer.
    errors
        One message per rejected file (nothing of such a file is stored).
    """

    stored: int = 0
    skipped: int = 0
    open_questions: int = 0
    errors: list[str] = field(default_factory=list)


def ingest_answers(stores, name: str, paths: list[Path]) -> Ingested:
    """Store answers of an external oracle, each checked against its question.

    Every file is read and checked whole before anything of it is stored: a file with
    any wrong answer (unknown candidate, a candidate that was not asked, another
    composition or structure) is rejected with an error naming it, and the others are
    stored. Answers already stored are skipped. The candidates answered move to
    ``labelled`` and the campaign's counts are updated.

    Raises
    ------
    CampaignNotFound
        No campaign of that name.
    """
    from alcampaign.config import CampaignConfig

    doc = stores.require_campaign(name)
    config = CampaignConfig.model_validate(doc["config"])
    fidelity = config.oracle.fidelity
    table = {
        d["candidate_id"]: d
        for d in stores.candidate_table(name, ["state", "structure", "acquisition"])
    }
    labelled = {lab["candidate_id"] for lab in stores.get_labels(name, fidelity, ["status"])}
    report = Ingested()
    for path in paths:
        try:
            labels, skipped = _file_labels(path, name, config, table, labelled)
        except AnswerError as exc:
            report.errors.append(str(exc))
            continue
        report.skipped += skipped
        report.stored += stores.add_labels(labels)
        stores.set_state(name, [lab["candidate_id"] for lab in labels], "labelled")
        labelled |= {lab["candidate_id"] for lab in labels}
    if report.stored:
        stores.update_counts(name, fidelity)
    report.open_questions = stores.candidates.count({"campaign": name, "state": "requested"})
    return report


def _file_labels(
    path: Path, name: str, config, table: dict[str, dict], labelled: set[str]
) -> tuple[list[dict], int]:
    """The label documents of one answer file (all checked), and how many of its
    answers are stored already. Raises AnswerError for the first wrong answer."""
    from alcampaign.config import EXTERNAL
    from alcampaign.store.facade import label_document

    labels, skipped = [], 0
    for answer in read_answers(path):
        cid = answer.candidate_id
        if cid not in table:
            raise AnswerError(f"{answer.source}: unknown candidate id {cid!r} for campaign {name}")
        if cid in labelled:
            skipped += 1
            continue
        if table[cid]["state"] != "requested":
            raise AnswerError(
                f"{answer.source}: candidate {cid} was not asked (state {table[cid]['state']})"
            )
        question = Structure.from_dict(table[cid]["structure"])
        labels.append(
            label_document(
                name,
                cid,
                config.oracle.fidelity,
                oracle={"maker": EXTERNAL, "source": str(answer.source)},
                cost=config.oracle.cost,
                iteration=(table[cid].get("acquisition") or {}).get("iteration"),
                energy_per_atom=check_answer(answer, question),
                structure=answer.structure or question,
                forces=answer.forces,
                stress=answer.stress,
            )
        )
    return labels, skipped
