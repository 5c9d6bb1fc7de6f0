"""Play the outside oracle of examples/cuau_external.yaml: relax exported questions with EMT.

    python examples/emt_answers.py QUESTIONS --out answers.extxyz

reads ``QUESTIONS/manifest.json`` (written by ``alcampaign export NAME --out QUESTIONS``,
any ``--format``), relaxes every question's structure with ASE's EMT the way the demo's
oracle does (atomate2's ``EmtRelaxMaker``: FIRE on the positions and the cell through a
``FrechetCellFilter`` to 0.02 eV/A, at most 300 steps), and writes one extended-XYZ frame
per question: the relaxed structure, its total energy (eV) and forces, and the
``candidate_id`` in the frame's info. ``alcampaign ingest NAME answers.extxyz`` reads it.
Any code that writes the same (or a CSV with ``candidate_id,energy``) can take its place.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.io import read, write
from ase.optimize import FIRE


def question(folder: Path, entry: dict) -> Atoms:
    """The structure of one manifest entry (CIF, POSCAR or a frame of an extxyz file)."""
    path = folder / entry["file"]
    if path.suffix == ".extxyz":
        frames = read(path, index=":")
        return next(a for a in frames if a.info.get("candidate_id") == entry["candidate_id"])
    return read(path)


def relax(atoms: Atoms, fmax: float = 0.02, steps: int = 300) -> Atoms:
    """EMT relaxation of positions and cell; the result carries its energy and forces."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=steps)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", type=Path, help="folder written by 'alcampaign export'")
    parser.add_argument("--out", type=Path, required=True, help="extended XYZ file to write")
    args = parser.parse_args(argv)
    manifest = json.loads((args.questions / "manifest.json").read_text())
    frames = []
    for entry in manifest["questions"]:
        atoms = relax(question(args.questions, entry))
        atoms.info["candidate_id"] = entry["candidate_id"]
        frames.append(atoms)
        print(f"{entry['candidate_id']} {entry['formula']}: {atoms.get_potential_energy():.4f} eV")
    write(args.out, frames, format="extxyz")
    print(f"{len(frames)} answers written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
