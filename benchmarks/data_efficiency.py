"""Data efficiency of the acquisition rules on the Cu-Au EMT pool.

Every one of the 631 orderings was labelled once (``benchmarks/cuau_pool.py``); each
rule then replays campaigns against that table from several random starts, using the
same code as the controller (:mod:`alcampaign.science.learning`). For each run it records the
dear-oracle calls (and cost) needed

* to reach a true RMSE of 5 meV/atom over the *whole* pool (every label is known
  here, so no cross-validation is needed), and
* to have labelled every ground state (every vertex of the convex hull of the EMT
  energies).

A run that does not get there within the budget counts as the budget. Prints JSON;
``--table`` also prints a markdown table. Usage::

    python benchmarks/cuau_pool.py                 # once, a few minutes
    python benchmarks/data_efficiency.py --seeds 5 --table
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from cuau_pool import load, orderings

from alcampaign.campaign.controller import learning_settings
from alcampaign.config import CampaignConfig
from alcampaign.science.hull import hull_energies
from alcampaign.science.learning import TrainingData, fit_and_validate, select

RULES = [
    "random",
    "max_variance",
    "mutual_information",
    "d_optimal",
    "lower_confidence_bound",
    "cost_aware",
]


def cluster_vectors(cutoffs: list[float]) -> np.ndarray:
    """Cluster vectors of the pool's orderings (same order as the cached table)."""
    from alcampaign.science.features import ClusterVectorFeaturizer

    parent, found, _ = orderings()
    feat = ClusterVectorFeaturizer(parent.atoms, parent.chemical_symbols, cutoffs)
    return feat.featurize([o.atoms for o in found])


def campaign_config(rule: str, seed: int, batch: int) -> CampaignConfig:
    """A config carrying the rule (the structure file is never read here)."""
    raw = {
        "name": "bench",
        "seed": seed,
        "system": {"structure": "unused.cif"},
        "acquisition": {"rule": rule, "batch_size": batch},
    }
    if rule == "cost_aware":
        raw["oracle"] = {
            "maker": "atomate2.ase.jobs.EmtRelaxMaker",
            "fidelity": "emt",
            "cost": 1.0,
            "cheap": {"maker": "chgnet.static", "fidelity": "chgnet", "cost": 0.02},
        }
    return CampaignConfig.model_validate(raw)


def run(rule, seed, pool, ground_states, rmse_target, n_initial, batch, budget):
    """Replay one campaign; returns the calls (and cost) at which each target was met."""
    X, emt, chg = pool["X"], pool["emt"], pool["chgnet"]
    n = len(emt)
    comps = np.column_stack([pool["x_au"], 1 - pool["x_au"]])
    config = campaign_config(rule, seed, batch)
    settings = learning_settings(config)
    rng = np.random.default_rng(seed)
    dear = list(rng.choice(n, n_initial, replace=False))
    cheap: list[int] = []
    cheap_cost = config.oracle.cheap.cost if config.oracle.cheap else 0.0
    reached = {"rmse": None, "ground_states": None}
    curve = []
    while True:
        calls = len(dear)
        cost = calls * config.oracle.cost + len(cheap) * cheap_cost
        data = TrainingData(X, np.array(dear), emt[dear], np.array(cheap, dtype=int), chg[cheap])
        fitted, _ = fit_and_validate(settings, data, rng, validate=False)
        rmse = float(np.sqrt(np.mean((fitted.predict(X).mean - emt) ** 2)))
        curve.append((calls, round(cost, 3), rmse))
        if reached["rmse"] is None and rmse <= rmse_target:
            reached["rmse"] = {"calls": calls, "cost": cost}
        if reached["ground_states"] is None and ground_states <= set(dear):
            reached["ground_states"] = {"calls": calls, "cost": cost}
        if all(reached.values()) or calls >= budget:
            break
        dear_ok = np.ones(n, dtype=bool)
        dear_ok[dear] = False
        cheap_ok = np.zeros(n, dtype=bool)
        if config.oracle.cheap:
            cheap_ok[:] = True
            cheap_ok[cheap] = False
        _, requests = select(
            settings, fitted, X, dear_ok, cheap_ok, min(batch, budget - calls), rng, comps
        )
        if not requests:
            break
        dear += [r.index for r in requests if not r.cheap]
        cheap += [r.index for r in requests if r.cheap]
    for key, value in reached.items():
        if value is None:
            reached[key] = {"calls": budget, "cost": None, "not_reached": True}
    return {"rule": rule, "seed": seed, **reached, "curve": curve}


def summarise(results, rules):
    out = {}
    for rule in rules:
        mine = [r for r in results if r["rule"] == rule]
        out[rule] = {
            key: {
                "mean_calls": float(np.mean([r[key]["calls"] for r in mine])),
                "std_calls": float(np.std([r[key]["calls"] for r in mine])),
                "not_reached": sum(bool(r[key].get("not_reached")) for r in mine),
                "mean_cost": (
                    float(np.mean([r[key]["cost"] for r in mine]))
                    if all(r[key]["cost"] is not None for r in mine)
                    else None
                ),
            }
            for key in ("rmse", "ground_states")
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rules", nargs="*", default=RULES)
    parser.add_argument("--rmse", type=float, default=0.005, help="eV/atom")
    parser.add_argument("--initial", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument(
        "--cutoffs",
        type=float,
        nargs="*",
        default=[10.0, 6.0, 5.0],
        help="cluster cutoffs (A); the demo's [6, 4.5] cannot reach 5 meV/atom",
    )
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()

    pool = load()
    pool["X"] = cluster_vectors(args.cutoffs)
    comps = np.column_stack([pool["x_au"], 1 - pool["x_au"]])
    on_hull = pool["emt"] - hull_energies(comps, pool["emt"]) < 1e-6
    ground_states = set(np.flatnonzero(on_hull).tolist())
    t0 = time.perf_counter()
    results = [
        run(rule, seed, pool, ground_states, args.rmse, args.initial, args.batch, args.budget)
        for rule in args.rules
        for seed in range(args.seeds)
    ]
    summary = summarise(results, args.rules)
    best = min(
        (r for r in args.rules if r != "random"), key=lambda r: summary[r]["rmse"]["mean_calls"]
    )
    report = {
        "benchmark": "data_efficiency",
        "pool": len(pool["emt"]),
        "n_ground_states": len(ground_states),
        "rmse_target": args.rmse,
        "initial": args.initial,
        "batch": args.batch,
        "budget": args.budget,
        "cutoffs": args.cutoffs,
        "n_features": int(pool["X"].shape[1]),
        "seeds": args.seeds,
        "summary": summary,
        "best_rule_for_rmse": best,
        "best_over_random_calls": (
            summary[best]["rmse"]["mean_calls"] / summary["random"]["rmse"]["mean_calls"]
            if "random" in summary
            else None
        ),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, indent=1))
    if args.table:
        print(
            f"\n| rule | calls to RMSE <= {args.rmse * 1000:.0f} meV/atom | calls to all "
            f"{len(ground_states)} ground states | cost to RMSE target |"
        )
        print("|---|---|---|---|")
        for rule, s in summary.items():
            r, g = s["rmse"], s["ground_states"]
            miss = lambda x: f" ({x['not_reached']} not reached)" if x["not_reached"] else ""  # noqa: E731
            cost = "" if r["mean_cost"] is None else f"{r['mean_cost']:.1f}"
            print(
                f"| {rule} | {r['mean_calls']:.1f} ± {r['std_calls']:.1f}{miss(r)} | "
                f"{g['mean_calls']:.1f} ± {g['std_calls']:.1f}{miss(g)} | {cost} |"
            )


if __name__ == "__main__":
    main()
