"""The Cu-Au benchmark pool: every fcc ordering up to 8 atoms, labelled once.

Run as a script to (re)compute ``benchmarks/data/cuau_emt_pool.json``: for each of the
631 orderings its id, composition, cluster vector, the EMT energy per atom after the
same relaxation the demo's oracle does (FIRE with a FrechetCellFilter to fmax 0.02 eV/A,
as atomate2's ``EmtRelaxMaker``), and the CHGNet static energy per atom of the ideal
ordering (the cheap fidelity). A few minutes on 2 cores; the benchmarks then replay
campaigns against this table instead of calling the oracle.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POOL_FILE = ROOT / "benchmarks" / "data" / "cuau_emt_pool.json"
CUTOFFS = [6.0, 4.5]


def orderings():
    """Parent, orderings and cluster vectors of the demo's Cu-Au pool."""
    from alcampaign.science.features import ClusterVectorFeaturizer
    from alcampaign.structures.enumeration import enumerate_orderings, load_parent

    parent = load_parent(ROOT / "examples" / "cuau_fcc.cif")
    found = enumerate_orderings(parent, 1, 8)
    feat = ClusterVectorFeaturizer(parent.atoms, parent.chemical_symbols, CUTOFFS)
    return parent, found, feat


def compute() -> dict:
    """Relax every ordering with EMT and screen it with CHGNet."""
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    from alcampaign.chgnet.prescreen import chgnet_prescreen
    from alcampaign.structures.enumeration import candidate_id

    t0 = time.perf_counter()
    _, found, feat = orderings()
    X = feat.featurize([o.atoms for o in found])
    chgnet = chgnet_prescreen([o.structure for o in found], forces=False)
    rows = []
    for o, x, c in zip(found, X, chgnet, strict=True):
        atoms = AseAtomsAdaptor.get_atoms(o.structure)
        atoms.calc = EMT()
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.02, steps=300)
        comp = o.structure.composition
        rows.append(
            {
                "candidate_id": candidate_id(o.structure),
                "x_au": comp.get_atomic_fraction("Au"),
                "n_sites": len(o.structure),
                "features": x.tolist(),
                "emt_energy_per_atom": atoms.get_potential_energy() / len(atoms),
                "chgnet_energy_per_atom": c["energy_per_atom"],
            }
        )
    return {"cutoffs": CUTOFFS, "seconds": round(time.perf_counter() - t0, 1), "pool": rows}


def load() -> dict:
    """The cached pool (compute it first with ``python benchmarks/cuau_pool.py``)."""
    if not POOL_FILE.exists():
        raise FileNotFoundError(f"{POOL_FILE} is missing: run python benchmarks/cuau_pool.py")
    data = json.loads(POOL_FILE.read_text())
    pool = data["pool"]
    return {
        "ids": [r["candidate_id"] for r in pool],
        "X": np.array([r["features"] for r in pool]),
        "x_au": np.array([r["x_au"] for r in pool]),
        "emt": np.array([r["emt_energy_per_atom"] for r in pool]),
        "chgnet": np.array([r["chgnet_energy_per_atom"] for r in pool]),
    }


if __name__ == "__main__":
    POOL_FILE.parent.mkdir(parents=True, exist_ok=True)
    result = compute()
    POOL_FILE.write_text(json.dumps(result))
    print(json.dumps({"n": len(result["pool"]), "seconds": result["seconds"]}))
