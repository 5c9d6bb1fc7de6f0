"""Fully labelled fcc binary pools for the science benchmarks (EMT as the oracle).

Every fcc ordering of a binary A-B in cells of up to 8 atoms (631 orderings), relaxed
once with EMT as the demo's oracle does (FIRE with a FrechetCellFilter to fmax
0.02 eV/A, as atomate2's ``EmtRelaxMaker``), and screened once with CHGNet (static
energy of the ideal ordering: the cheap fidelity). The benchmarks then replay
campaigns against these tables instead of calling the oracle, so every candidate's
truth is known.

The parent's lattice parameter is the mean of the two elements' EMT fcc lattice
parameters (Vegard's law). Features are not stored: enumeration is deterministic, so
:func:`load` re-enumerates and any featurizer can be applied to ``orderings``.

Fcc Cu-Pd is kept out of every tuning benchmark (a blind check of the defaults): it is
built only when asked for by name with ``--blind``.

One oxide pool, ``Li05CoO2``: every Li/vacancy ordering of ``examples/li05coo2_chgnet.yaml``
(layered LiCoO2, half the Li sites filled) enumerated as that example does but in cells
of up to 8 primitive cells (277 orderings, 7-28 atoms), each relaxed with the example's
oracle (atomate2 ``ForceFieldRelaxMaker``, CHGNet, cell relaxed, fmax 0.05 eV/A, 150
steps; run in 2 worker processes by :func:`alcampaign.campaign.parallel.run_oracle_batch`)
and screened with CHGNet as the campaign's prescreen does. All its orderings share one
composition, so it has no hull: it tests the surrogate on ordering energies alone.

Usage::

    python benchmarks/pools.py --screen           # hull depth of every pair, cells <= 4
    python benchmarks/pools.py AgPt NiPt AlNi     # label whole pools (~5 min each)
    python benchmarks/pools.py Li05CoO2           # the oxide pool (~35 min on 2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from functools import cache
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
ELEMENTS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
BLIND = "CuPd"  # never tuned on
MAX_SIZE = 8
OXIDE = "Li05CoO2"
OXIDE_EXAMPLE = ROOT / "examples" / "li05coo2_chgnet.yaml"


def pool_file(pair: str) -> Path:
    """Where a pool's labels are cached (the oxide's oracle is CHGNet, the pairs' EMT)."""
    return DATA / f"{pair.lower()}_{'chgnet' if pair == OXIDE else 'emt'}_pool.json"


def is_blind(pair: str) -> bool:
    """Whether a pool is the blind check (either order of its elements)."""
    return pair != OXIDE and set(split(pair)) == set(split(BLIND))


def split(pair: str) -> tuple[str, str]:
    """'CuAu' -> ('Cu', 'Au')."""
    for i in range(1, len(pair)):
        if pair[i].isupper():
            return pair[:i], pair[i:]
    raise ValueError(f"not a pair of element symbols: {pair!r}")


@cache
def emt_lattice_parameter(element: str) -> float:
    """The EMT fcc lattice parameter of an element (Angstrom)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.filters import ExpCellFilter
    from ase.optimize import BFGS

    atoms = bulk(element, "fcc", a=4.0, cubic=True)
    atoms.calc = EMT()
    BFGS(ExpCellFilter(atoms), logfile=None).run(fmax=1e-4, steps=200)
    return float(atoms.cell.lengths()[0])


def parent(pair: str):
    """The disordered fcc parent of a pair (``alcampaign`` Parent)."""
    from pymatgen.core import Lattice, Structure

    from alcampaign.structures.enumeration import make_parent

    a, b = split(pair)
    lattice = 0.5 * (emt_lattice_parameter(a) + emt_lattice_parameter(b))
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(lattice), [{a: 0.5, b: 0.5}], [[0, 0, 0]])
    return make_parent(s, source=f"fcc {a}-{b}")


def orderings(pair: str, max_size: int = MAX_SIZE):
    """Parent and orderings of a pair (deterministic: same order as the stored rows)."""
    from alcampaign.structures.enumeration import enumerate_orderings

    p = parent(pair)
    return p, enumerate_orderings(p, 1, max_size)


def relax_emt(structure) -> float:
    """EMT energy per atom after the oracle's relaxation."""
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = EMT()
    FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.02, steps=300)
    return atoms.get_potential_energy() / len(atoms)


def compute(pair: str, max_size: int = MAX_SIZE, chgnet: bool = True) -> dict:
    """Relax every ordering of a pair with EMT (and screen it with CHGNet)."""
    from alcampaign.structures.enumeration import candidate_id

    t0 = time.perf_counter()
    a, b = split(pair)
    _, found = orderings(pair, max_size)
    cheap = [None] * len(found)
    if chgnet:
        from alcampaign.chgnet.prescreen import chgnet_prescreen

        cheap = [c["energy_per_atom"] for c in chgnet_prescreen([o.structure for o in found])]
    rows = []
    for o, c in zip(found, cheap, strict=True):
        rows.append(
            {
                "candidate_id": candidate_id(o.structure),
                "x": o.structure.composition.get_atomic_fraction(b),
                "n_sites": len(o.structure),
                "emt_energy_per_atom": relax_emt(o.structure),
                "chgnet_energy_per_atom": c,
            }
        )
    return {
        "pair": pair,
        "elements": [a, b],
        "max_size": max_size,
        "seconds": round(time.perf_counter() - t0, 1),
        "pool": rows,
    }


def oxide_orderings(max_size: int = MAX_SIZE):
    """Parent and orderings of the oxide pool: the example's enumeration, cells up to
    ``max_size`` primitive cells (deterministic: same order as the stored rows)."""
    from alcampaign.config import load_config
    from alcampaign.structures.enumeration import orderings_from_config, read_structure

    cfg = load_config(OXIDE_EXAMPLE)
    cfg = cfg.model_copy(update={"enumeration": cfg.enumeration.model_copy(
        update={"max_size": max_size})})
    return orderings_from_config(cfg, read_structure(cfg.system.structure))


def compute_oxide(max_size: int = MAX_SIZE, workers: int = 2) -> dict:
    """Relax every oxide ordering with the example's oracle (and screen it with CHGNet)."""
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    from alcampaign.campaign.oracle import import_maker
    from alcampaign.campaign.parallel import run_oracle_batch, shutdown_pools
    from alcampaign.chgnet.prescreen import chgnet_prescreen
    from alcampaign.config import load_config
    from alcampaign.structures.enumeration import candidate_id

    t0 = time.perf_counter()
    oracle = load_config(OXIDE_EXAMPLE).oracle
    maker = import_maker(oracle.maker, oracle.kwargs)
    _, found = oxide_orderings(max_size)
    cheap = chgnet_prescreen([o.structure for o in found])
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    store.connect()
    jobs = [maker.make(o.structure) for o in found]
    answers = [
        {"candidate_id": candidate_id(o.structure), "cheap": False, "job_uuid": j.uuid}
        for o, j in zip(found, jobs, strict=True)
    ]
    # the jobs' working directories go to a scratch folder
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        try:
            run_oracle_batch(jobs, answers, store, workers, 1)
        finally:
            shutdown_pools()
    rows = [
        {
            "candidate_id": a["candidate_id"],
            "x": 0.5,
            "n_sites": len(o.structure),
            "energy_per_atom": a["energy"] / len(o.structure),
            "chgnet_energy_per_atom": c["energy_per_atom"],
        }
        for o, a, c in zip(found, answers, cheap, strict=True)
    ]
    return {
        "pair": OXIDE,
        "oracle": {"maker": oracle.maker, "kwargs": oracle.kwargs},
        "max_size": max_size,
        "seconds": round(time.perf_counter() - t0, 1),
        "pool": rows,
    }


def formation_energies(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Energy per atom relative to the line between the two end members."""
    e0 = e[x == 0].min()
    e1 = e[x == 1].min()
    return e - ((1 - x) * e0 + x * e1)


def hull_ground_states(x: np.ndarray, e: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Indices of the ground states (vertices of the lower hull of formation energy)."""
    ef = formation_energies(x, e)
    order = np.lexsort((ef, x))
    hull: list[int] = []
    for i in order:
        if hull and x[hull[-1]] == x[i]:
            continue  # the lowest at this composition came first
        while len(hull) >= 2:
            i0, i1 = hull[-2], hull[-1]
            cross = (x[i1] - x[i0]) * (ef[i] - ef[i0]) - (ef[i1] - ef[i0]) * (x[i] - x[i0])
            if cross <= tol * (x[i] - x[i0]):
                hull.pop()
            else:
                break
        hull.append(i)
    return np.array(sorted(hull))


def load(pair: str) -> dict:
    """A labelled pool: ids, orderings (ASE + pymatgen), x, EMT and CHGNet energies.

    ``ground_states`` are the indices of the true hull vertices (end members included)
    and ``formation`` the EMT formation energies (eV/atom).
    """
    path = pool_file(pair)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run python benchmarks/pools.py {pair}")
    data = json.loads(path.read_text())
    rows = data["pool"]
    if pair == OXIDE:
        return _load_oxide(data)
    p, found = orderings(pair, data.get("max_size", MAX_SIZE))
    if len(found) != len(rows):
        raise RuntimeError(f"{path}: {len(rows)} rows but {len(found)} orderings enumerated")
    x = np.array([r.get("x", r.get("x_au")) for r in rows])
    emt = np.array([r["emt_energy_per_atom"] for r in rows])
    return {
        "pair": pair,
        "parent": p,
        "orderings": found,
        "ids": [r["candidate_id"] for r in rows],
        "x": x,
        "n_sites": np.array([r["n_sites"] for r in rows]),
        "emt": emt,
        "chgnet": np.array(
            [
                np.nan if r["chgnet_energy_per_atom"] is None else r["chgnet_energy_per_atom"]
                for r in rows
            ]
        ),
        "truth": emt,
        "formation": formation_energies(x, emt),
        "ground_states": hull_ground_states(x, emt),
    }


def _load_oxide(data: dict) -> dict:
    """The oxide pool as :func:`load` gives it (``truth``: the relaxed CHGNet energy per
    atom; one composition, so no formation energies or ground states)."""
    from alcampaign.structures.enumeration import candidate_id

    rows = data["pool"]
    p, found = oxide_orderings(data["max_size"])
    ids = [r["candidate_id"] for r in rows]
    if ids != [candidate_id(o.structure) for o in found]:
        raise RuntimeError(f"{pool_file(OXIDE)}: the enumeration no longer gives its rows")
    return {
        "pair": OXIDE,
        "parent": p,
        "orderings": found,
        "ids": ids,
        "x": np.array([r["x"] for r in rows]),
        "n_sites": np.array([r["n_sites"] for r in rows]),
        "truth": np.array([r["energy_per_atom"] for r in rows]),
        "chgnet": np.array([r["chgnet_energy_per_atom"] for r in rows]),
    }


def screen(max_size: int = 4) -> list[dict]:
    """Hull depth and ground-state count of every pair on small cells (EMT only)."""
    out = []
    for a, b in combinations(ELEMENTS, 2):
        pair = a + b
        if is_blind(pair):
            continue
        res = compute(pair, max_size, chgnet=False)
        x = np.array([r["x"] for r in res["pool"]])
        e = np.array([r["emt_energy_per_atom"] for r in res["pool"]])
        gs = hull_ground_states(x, e)
        row = {
            "pair": pair,
            "n": len(x),
            "n_ground_states": len(gs),
            "min_formation": float(formation_energies(x, e).min()),
            "seconds": res["seconds"],
        }
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", nargs="*", help="pairs to label, e.g. AgPt NiPt")
    ap.add_argument("--screen", action="store_true", help="screen every pair on small cells")
    ap.add_argument("--blind", action="store_true", help=f"allow the blind pair {BLIND}")
    args = ap.parse_args()
    if args.screen:
        screen()
    for pair in args.pairs:
        if is_blind(pair) and not args.blind:
            raise SystemExit(f"{BLIND} is the blind check: pass --blind to build it")
        DATA.mkdir(parents=True, exist_ok=True)
        res = compute_oxide() if pair == OXIDE else compute(pair)
        pool_file(pair).write_text(json.dumps(res))
        if pair == OXIDE:  # one composition: no hull to report
            print(json.dumps({"pair": pair, "n": len(res["pool"]), "seconds": res["seconds"]}))
            continue
        x = np.array([r["x"] for r in res["pool"]])
        e = np.array([r["emt_energy_per_atom"] for r in res["pool"]])
        print(
            json.dumps(
                {
                    "pair": pair,
                    "n": len(x),
                    "seconds": res["seconds"],
                    "n_ground_states": len(hull_ground_states(x, e)),
                    "min_formation": float(formation_energies(x, e).min()),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
