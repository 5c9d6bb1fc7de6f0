"""On-the-fly MD demo against a potential trained on as many random frames.

Reads the campaign of ``examples/cu_otf_md.yaml`` from the embedded store in
``$ALCAMPAIGN_HOME`` (runs it there first if it is absent: ``alcampaign md`` does the
same), then measures, with EMT as the truth:

* oracle calls against MD steps (from the campaign),
* force RMSE on held-out frames of an independent EMT trajectory under the same
  temperature ramp, overall and per temperature band,
* the same for potentials fitted to the same number of frames drawn at random from an
  EMT-driven trajectory under the same ramp (several draws),
* energy drift of NVE (velocity Verlet) runs on each potential from a hot frame.

Prints one JSON object. Usage::

    ALCAMPAIGN_HOME=/tmp/otf PYTHONPATH=. python benchmarks/otf_md.py [--draws 5]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from ase import units
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from alcampaign.campaign.otf_md import initial_atoms, load_potential, md_flow, new_potential
from alcampaign.md.config import load_md_config
from alcampaign.md.dynamics import energy_drift, temperature_at
from alcampaign.md.potential import Frame, UncertainPotentialCalculator
from alcampaign.store.facade import CampaignStores, connect_job_store, load_job_store

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "cu_otf_md.yaml"


def emt_trajectory(config, structure, seed: int, every: int) -> list[tuple[Frame, float, object]]:
    """EMT-driven Langevin MD under the config's schedule (2 fs); a frame every ``every``
    steps with its target temperature and its atoms with velocities."""
    atoms = initial_atoms(config, structure)
    atoms.calc = EMT()
    schedule = [list(p) for p in config.md.temperature]
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=temperature_at(0, schedule), rng=np.random.default_rng(seed)
    )
    dyn = Langevin(
        atoms,
        2 * units.fs,
        temperature_K=temperature_at(0, schedule),
        friction=config.md.friction / units.fs,
        fixcm=False,
        rng=np.random.default_rng(seed + 1),
    )
    out = []
    for step in range(config.md.n_steps + 1):
        if step % every == 0:
            snap = atoms.copy()
            snap.calc = None
            frame = Frame(snap, atoms.get_potential_energy(), atoms.get_forces())
            out.append((frame, temperature_at(step, schedule), snap))
        dyn.set_temperature(temperature_K=temperature_at(step + 1, schedule))
        dyn.run(1)
    return out


def force_errors(potential, test) -> dict:
    """Force RMSE (eV/A) overall and per temperature band, and the mean predicted std."""
    err, bands, stds = [], [], []
    for frame, temp, _ in test:
        r = potential.evaluate(frame.atoms)
        err.append(r.forces - frame.forces)
        bands.append(temp)
        stds.append(float(np.sqrt(np.mean(r.forces_std**2))))
    err, bands = np.array(err), np.array(bands)
    out = {"rmse": float(np.sqrt(np.mean(err**2))), "mean_predicted_std": float(np.mean(stds))}
    for lo, hi in [(0, 700), (700, 1100), (1100, 2000)]:
        sel = (bands >= lo) & (bands < hi)
        if sel.any():
            out[f"rmse_{lo}_{hi}K"] = float(np.sqrt(np.mean(err[sel] ** 2)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=5, help="Random-frame baselines.")
    parser.add_argument("--nve-steps", type=int, default=500)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from jobflow import run_locally
    from pymatgen.core import Structure

    config = load_md_config(CONFIG)
    structure = Structure.from_file(config.system.structure)
    job_store = load_job_store()
    connect_job_store(job_store)
    stores = CampaignStores.from_job_store(job_store)
    t0 = time.perf_counter()
    if stores.get_campaign(config.name) is None:
        run_locally(md_flow(config, structure), store=job_store, log=False)
    campaign_s = time.perf_counter() - t0
    doc = stores.get_campaign(config.name)
    otf, model = load_potential(stores, config.name, config)
    n_frames = model["n_train"]

    pool = emt_trajectory(config, structure, seed=100, every=5)  # random frames from here
    test = emt_trajectory(config, structure, seed=200, every=40)  # held out
    species = sorted({el.symbol for el in structure.composition})
    rng = np.random.default_rng(0)
    random_runs = []
    for _ in range(args.draws):
        pick = rng.choice(len(pool), size=n_frames, replace=False)
        pot = new_potential(config, species).fit([pool[i][0] for i in pick])
        random_runs.append(force_errors(pot, test))

    hot = max(test, key=lambda t: t[1])[2]  # the hottest held-out frame, with velocities
    nve_dt = 1.0
    drift = {
        "emt": energy_drift(hot, EMT(), args.nve_steps, nve_dt),
        "otf": energy_drift(hot, UncertainPotentialCalculator(otf), args.nve_steps, nve_dt),
    }
    summary = doc.get("md_summary") or {}
    keys = random_runs[0].keys()
    result = {
        "config": str(CONFIG.relative_to(ROOT)),
        "n_atoms": len(initial_atoms(config, structure)),
        "md_steps": summary.get("md_steps"),
        "oracle_calls": doc["n_oracle_calls"],
        "oracle_calls_bootstrap": summary.get("n_bootstrap"),
        "call_steps": summary.get("call_steps"),
        "call_temperatures_K": [
            round(temperature_at(s, [list(p) for p in config.md.temperature]))
            for s in summary.get("call_steps", [])
        ],
        "reasons": summary.get("reasons"),
        "dt_fs": summary.get("dt_fs"),
        "campaign_seconds_this_run": round(campaign_s, 1),
        "n_test_frames": len(test),
        "otf": force_errors(otf, test),
        "random_same_n": {
            k: {
                "mean": float(np.mean([r[k] for r in random_runs])),
                "std": float(np.std([r[k] for r in random_runs])),
            }
            for k in keys
        },
        "random_draws": args.draws,
        "nve_drift_from_hottest_test_frame": drift,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
