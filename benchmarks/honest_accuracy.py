"""Honest accuracy under active sampling: pool-wide error estimates and calibration.

Fully labelled fcc binary EMT pools (``benchmarks/pools.py``; cells of up to 8 atoms;
Cu-Pd is never used: it is the blind check) are replayed as campaigns of 40 oracle
calls (10 random, then batches of 5) with ``max_variance``,
``lower_confidence_bound`` and ``random``, with the controller's own science code
(:func:`alcampaign.science.learning.fit_and_validate` and ``select``, recalibration
and the accuracy estimate included, every iteration). At the end each campaign's
model is compared with the truth over the whole pool:

* every pool-wide RMSE estimate (``posterior``, ``iwcv``, ``cv``; and ``audit``, from a
  separate replay that keeps 8 of the 40 calls as a random audit sample) as
  estimated / true RMSE and whether its 90% interval holds the true RMSE;
* the ECE and signed miscalibration area over the *unlabelled* candidates, for the
  recalibrated predictive (``calibrated``) and the raw one (``raw``, plain CV's).

Prints one JSON line per campaign and a summary line; ``--table`` adds markdown
tables. Usage::

    python benchmarks/honest_accuracy.py --pairs CuAu --seeds 1 --rules random   # ~10 s
    python benchmarks/honest_accuracy.py --table                                  # minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alcampaign.campaign.controller import learning_settings
from alcampaign.config import CampaignConfig
from alcampaign.science.calibration import expected_calibration_error, miscalibration_area
from alcampaign.science.learning import (
    TrainingData,
    assess_accuracy,
    fit_and_validate,
    select,
)
from alcampaign.science.validation import audit_sample

RULES = ["max_variance", "lower_confidence_bound", "random"]
PAIRS = ["CuAu", "NiPt", "AlAg", "CuPt"]
ESTIMATES = ["posterior", "iwcv", "cv"]


def pool_arrays(pair: str, cutoffs: list[float]) -> dict:
    """Features, EMT energies and compositions of a labelled pool."""
    import pools

    from alcampaign.science.features import ClusterVectorFeaturizer

    p = pools.load(pair)
    feat = ClusterVectorFeaturizer(p["parent"].atoms, p["parent"].chemical_symbols, cutoffs)
    X = feat.featurize([o.atoms for o in p["orderings"]])
    return {"X": X, "y": p["emt"], "comps": np.column_stack([p["x"], 1 - p["x"]])}


def config(rule: str, seed: int, estimate: str = "posterior", audit: int = 0):
    """The learning settings of a campaign config carrying the rule, the estimate and
    the audit size (the CIF is never read)."""
    cfg = CampaignConfig.model_validate(
        {
            "name": "bench",
            "seed": seed,
            "system": {"structure": "unused.cif"},
            "acquisition": {"rule": rule, "batch_size": 5},
            "initial_design": {"n_initial": 10},
            "stopping": {
                "max_oracle_calls": 40,
                "accuracy_estimate": estimate,
                "audit_size": audit,
            },
        }
    )
    return learning_settings(cfg), cfg.stopping.audit_size


def replay(pool: dict, cfg, n_initial: int, budget: int):
    """One campaign against the pool; returns the final data, fitted model and metrics."""
    cfg, audit_size = cfg
    X, y = pool["X"], pool["y"]
    n = len(y)
    rng = np.random.default_rng(cfg.seed)
    dear = list(rng.choice(n, n_initial, replace=False))
    audit = audit_sample(n, audit_size, cfg.seed, np.array(dear))
    free = np.ones(n, dtype=bool)
    free[dear] = False
    free[audit] = False
    batch = cfg.batch_size
    while True:
        data = TrainingData(X, np.array(dear), y[dear], audit_index=audit, audit_y=y[audit])
        fitted, metrics = fit_and_validate(cfg, data, rng)
        if len(dear) + audit.size >= budget:
            return data, fitted, metrics
        k = min(batch, budget - len(dear) - audit.size)
        _, requests = select(cfg, fitted, X, free, np.zeros(n, dtype=bool), k, rng, pool["comps"])
        chosen = [r.index for r in requests]
        if set(chosen) & set(audit.tolist()):
            raise AssertionError("an acquisition rule chose an audit candidate")
        dear += chosen
        free[chosen] = False


def evaluate(pool: dict, rule: str, seed: int, budget: int, audit_size: int) -> dict:
    """Every estimate and the calibration of one campaign, against the truth."""
    X, y = pool["X"], pool["y"]
    cfg = config(rule, seed)
    data, fitted, _ = replay(pool, cfg, 10, budget)
    truth = float(np.sqrt(np.mean((fitted.predict(X).mean - y) ** 2)))
    unl = np.ones(len(y), dtype=bool)
    unl[data.dear_index] = False
    raw = fitted.predict(X, calibrated=False)
    row = {"rule": rule, "seed": seed, "true_rmse": truth}
    row["raw"] = {
        "ece": expected_calibration_error(y[unl], raw.mean[unl], raw.std[unl]),
        "miscalibration_area": miscalibration_area(y[unl], raw.mean[unl], raw.std[unl]),
        "sharpness": float(raw.std[unl].mean()),
    }
    for est in ESTIMATES:
        settings = config(rule, seed, est)[0]
        cal, m = assess_accuracy(settings, data, fitted, np.random.default_rng(seed))
        p = cal.apply(raw)
        row[est] = {
            "rmse": m["rmse"],
            "low": m["rmse_low"],
            "high": m["rmse_high"],
            "ratio": m["rmse"] / truth,
            "holds": bool(m["rmse_low"] <= truth <= m["rmse_high"]),
            "high_ge_truth": bool(m["rmse_high"] >= truth),
            "scale": cal.scale,
            "ece": expected_calibration_error(y[unl], p.mean[unl], p.std[unl]),
            "miscalibration_area": miscalibration_area(y[unl], p.mean[unl], p.std[unl]),
            "sharpness": float(p.std[unl].mean()),
            "ece_heldout": m["ece"],
        }
    if audit_size:
        cfg_a = config(rule, seed, "audit", audit_size)
        _, fit_a, m_a = replay(pool, cfg_a, 10, budget)
        truth_a = float(np.sqrt(np.mean((fit_a.predict(X).mean - y) ** 2)))
        row["audit"] = {
            "rmse": m_a["rmse"],
            "low": m_a["rmse_low"],
            "high": m_a["rmse_high"],
            "true_rmse": truth_a,
            "ratio": m_a["rmse"] / truth_a,
            "holds": bool(m_a["rmse_low"] <= truth_a <= m_a["rmse_high"]),
            "high_ge_truth": bool(m_a["rmse_high"] >= truth_a),
        }
    return row


def summarise(rows: list[dict], methods: list[str]) -> dict:
    """Fractions in band and intervals holding the truth; ECE medians per rule."""
    out = {}
    for est in methods:
        r = [row[est] for row in rows if est in row]
        ratio = np.array([x["ratio"] for x in r])
        out[est] = {
            "n": len(r),
            "in_band": float(np.mean((ratio >= 0.75) & (ratio <= 1.33))),
            "median_ratio": float(np.median(ratio)),
            "interval_holds": float(np.mean([x["holds"] for x in r])),
            "upper_at_least_truth": float(np.mean([x["high_ge_truth"] for x in r])),
        }
    for key in ["raw", *[e for e in methods if e != "audit"]]:
        eces = np.array([row[key]["ece"] for row in rows])
        per_rule = {
            rule: float(np.median([row[key]["ece"] for row in rows if row["rule"] == rule]))
            for rule in sorted({row["rule"] for row in rows})
        }
        out.setdefault(key, {}).update(
            ece_median=float(np.median(eces)),
            ece_worst_rule_median=max(per_rule.values()),
            ece_per_rule=per_rule,
            miscalibration_area_median=float(
                np.median([row[key]["miscalibration_area"] for row in rows])
            ),
        )
    return out


def tables(rows: list[dict], summary: dict, methods: list[str]) -> str:
    """Markdown: per-rule medians of estimated/true RMSE, and the summary."""
    lines = [
        "| pool | rule | true RMSE (meV/atom) | "
        + " | ".join(f"{m} est./true" for m in methods)
        + " | ECE raw | ECE calibrated | signed area raw / calibrated |",
        "|---|---|---|" + "---|" * len(methods) + "---|---|---|",
    ]
    for row in rows:
        cells = [f"{row[m]['ratio']:.2f}{'' if row[m]['holds'] else ' (out)'}" for m in methods]
        lines.append(
            f"| {row['pair']} | {row['rule']} s{row['seed']} | {1000 * row['true_rmse']:.2f} | "
            + " | ".join(cells)
            + f" | {row['raw']['ece']:.3f} | {row['posterior']['ece']:.3f} | "
            f"{row['raw']['miscalibration_area']:+.3f} / "
            f"{row['posterior']['miscalibration_area']:+.3f} |"
        )
    lines += [
        "",
        "| estimate | est./true in [0.75, 1.33] | median est./true | interval holds truth | "
        "upper end >= truth |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        s = summary[m]
        lines.append(
            f"| {m} | {s['in_band']:.0%} | {s['median_ratio']:.2f} | "
            f"{s['interval_holds']:.0%} | {s['upper_at_least_truth']:.0%} |"
        )
    lines += ["", "| predictive | median ECE | worst rule's median ECE | median signed area |"]
    lines.append("|---|---|---|---|")
    for key in ["raw", *[e for e in methods if e != "audit"]]:
        s = summary[key]
        lines.append(
            f"| {key} | {s['ece_median']:.3f} | {s['ece_worst_rule_median']:.3f} | "
            f"{s['miscalibration_area_median']:+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="*", default=PAIRS)
    ap.add_argument("--rules", nargs="*", default=RULES)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--audit", type=int, default=8, help="audit sample of the audit replay")
    ap.add_argument("--cutoffs", type=float, nargs="*", default=[6.0, 4.5])
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if any(set(p) == set("CuPd") or p in ("CuPd", "PdCu") for p in args.pairs):
        raise SystemExit("Cu-Pd is the blind check: it is never used here")
    t0 = time.perf_counter()
    rows = []
    for pair in args.pairs:
        pool = pool_arrays(pair, args.cutoffs)
        for rule in args.rules:
            for seed in range(args.seeds):
                row = {"pair": pair, **evaluate(pool, rule, seed, args.budget, args.audit)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    methods = ESTIMATES + (["audit"] if args.audit else [])
    summary = summarise(rows, methods)
    print(
        json.dumps(
            {
                "benchmark": "honest_accuracy",
                "pairs": args.pairs,
                "rules": args.rules,
                "seeds": args.seeds,
                "budget": args.budget,
                "cutoffs": args.cutoffs,
                "summary": summary,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    if args.table:
        print()
        print(tables(rows, summary, methods))


if __name__ == "__main__":
    main()
