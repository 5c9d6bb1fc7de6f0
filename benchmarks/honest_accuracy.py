"""Honest accuracy under active sampling: pool-wide error estimates and calibration.

Fully labelled fcc binary EMT pools (``benchmarks/pools.py``; cells of up to 8 atoms;
Cu-Pd is never used: it is the blind check; Ag-Au is the held-out check) are replayed
as campaigns of 40 oracle calls (the controller's initial design: the two end members
and 8 random candidates, then batches of 5) with ``max_variance``,
``lower_confidence_bound`` and ``random``, with the controller's own science code
(:func:`alcampaign.science.learning.fit_and_validate` and ``select``, recalibration
and the accuracy estimate included, every iteration) and the default surrogate of a
campaign (``--surrogate old``: the demo's former cutoffs with the isotropic model).
At the end each campaign's model is compared with the truth over the whole pool:

* every pool-wide RMSE estimate (:data:`ESTIMATE_VARIANTS`; and ``audit``, from a
  separate replay that keeps ``--audit`` of the 40 calls as a random audit sample) as
  estimated / true RMSE and whether its 90% interval holds the true RMSE, and a bound:
  how often the RMSE of the final model's true errors on 8, 20 or 40 random unlabelled
  candidates falls within [0.75, 1.33] of the pool's (:func:`oracle_audit_in_band`);
* the ECE, signed miscalibration area and sharpness over the *unlabelled* candidates
  of the raw predictive and of every recalibration (``--calibrations``), fitted with
  the density-ratio weights (the default) and without them (``/unweighted``).

Prints one JSON line per campaign and a summary line; ``--table`` adds markdown
tables; ``--cache DIR`` keeps each replayed campaign's final state, so estimates and
recalibrations can be compared again without replaying. Usage::

    python benchmarks/honest_accuracy.py --pairs CuAu --seeds 1 --rules random   # ~30 s
    python benchmarks/honest_accuracy.py --audit 0 --table     # 27 campaigns, ~10 min
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
from alcampaign.science.calibration import (
    CALIBRATIONS,
    LEVELS,
    VarianceCalibration,
    coverage,
    ece_of_z,
)
from alcampaign.science.learning import (
    TrainingData,
    design_matrix,
    fit_and_validate,
    initial_design,
    select,
    unlabelled_eigenvalues,
)
from alcampaign.science.validation import (
    HeldOut,
    assess,
    audit_sample,
    density_ratio,
)

RULES = ["max_variance", "lower_confidence_bound", "random"]
PAIRS = ["CuAu", "NiPt", "CuPt"]  # tuning pools; Ag-Au is the held-out check
# Each estimate: (method, importance-weighted residuals, moments of the posterior's,
# spread of its interval: validation.SPREADS).
ESTIMATE_VARIANTS = {
    "posterior": ("posterior", True, "student_t", "multivariate_t"),
    "posterior/gaussian_spread": ("posterior", True, "student_t", "gaussian"),
    "posterior/no_spread": ("posterior", True, "student_t", "none"),
    "posterior/empirical": ("posterior", True, "empirical", "none"),
    "posterior/unweighted": ("posterior", False, "empirical", "none"),
    "iwcv": ("iwcv", True, "empirical", "none"),
    "cv": ("cv", False, "empirical", "none"),
}
ESTIMATES = list(ESTIMATE_VARIANTS)
WEIGHTINGS = ["importance", "none"]
# The surrogate of a campaign: the demo's (examples/cuau_emt.yaml, the defaults) or the
# one this benchmark used first (the demo's old cutoffs, isotropic prior, every column).
SURROGATES = {
    "default": {
        "cutoffs": [10.0, 7.0, 5.5],
        "surrogate": {},
        "prescreen": True,
    },
    "old": {
        "cutoffs": [6.0, 4.5],
        "surrogate": {"prior": "isotropic", "basis": "fixed", "cheap_energy": "off"},
        "prescreen": False,
    },
}


def config(
    rule: str,
    seed: int,
    surrogate: str = "default",
    estimate: str = "posterior",
    audit: int = 0,
    calibration: str | None = None,
    weighting: str | None = None,
) -> CampaignConfig:
    """A campaign config carrying the rule, the surrogate, the estimate, the audit size
    and the recalibration (``None``: the default); the CIF is never read."""
    variant = SURROGATES[surrogate]
    stopping = {"max_oracle_calls": 40, "accuracy_estimate": estimate, "audit_size": audit}
    if calibration is not None:
        stopping["calibration"] = calibration
    if weighting is not None:
        stopping["calibration_weighting"] = weighting
    return CampaignConfig.model_validate(
        {
            "name": "bench",
            "seed": seed,
            "system": {"structure": "unused.cif"},
            "features": {"kind": "cluster_vector", "cutoffs": variant["cutoffs"]},
            "prescreen": {"enabled": variant["prescreen"]},
            "surrogate": variant["surrogate"],
            "acquisition": {"rule": rule, "batch_size": 5},
            "initial_design": {"n_initial": 10},
            "stopping": stopping,
        }
    )


def pool_arrays(pair: str, surrogate: str) -> dict:
    """Design matrix (as the controller builds it), cluster metadata, EMT energies and
    compositions of a labelled pool."""
    import pools

    from alcampaign.science.features import ClusterVectorFeaturizer

    p = pools.load(pair)
    variant = SURROGATES[surrogate]
    feat = ClusterVectorFeaturizer(
        p["parent"].atoms, p["parent"].chemical_symbols, variant["cutoffs"]
    )
    raw = feat.featurize([o.atoms for o in p["orderings"]])
    settings = learning_settings(config("random", 0, surrogate))
    X, columns = design_matrix(
        settings, "cluster_vector", raw, p["chgnet"], feat.cluster_metadata()
    )
    comps = np.column_stack([p["x"], 1 - p["x"]])
    return {"X": X, "columns": columns, "y": p["emt"], "comps": comps, "cheap": p["chgnet"]}


def replay(pool: dict, cfg: CampaignConfig, budget: int) -> dict:
    """One campaign against the pool (the initial design, then batches of the rule).

    Returns the final state as arrays: the labelled and audit rows, the out-of-fold
    (raw) predictive of the labels, and the final model's raw predictive over the pool.
    """
    settings, audit_size = learning_settings(cfg), cfg.stopping.audit_size
    X, y = pool["X"], pool["y"]
    n = len(y)
    rng = np.random.default_rng(cfg.seed)
    dear, _ = initial_design(
        cfg.initial_design.n_initial,
        n,
        rng,
        pool["comps"],
        pool["cheap"] if cfg.prescreen.enabled else None,
        cfg.initial_design.end_members,
    )
    audit = audit_sample(n, audit_size, cfg.seed, np.array(dear))
    free = np.ones(n, dtype=bool)
    free[dear] = False
    free[audit] = False
    while True:
        data = TrainingData(
            X,
            np.array(dear),
            y[dear],
            audit_index=audit,
            audit_y=y[audit],
            columns=pool["columns"],
        )
        fitted, _ = fit_and_validate(settings, data, rng)
        if len(dear) + audit.size >= budget:
            break
        k = min(settings.batch_size, budget - len(dear) - audit.size)
        _, requests = select(
            settings, fitted, X, free, np.zeros(n, dtype=bool), k, rng, pool["comps"]
        )
        chosen = [r.index for r in requests]
        if set(chosen) & set(audit.tolist()):
            raise AssertionError("an acquisition rule chose an audit candidate")
        dear += chosen
        free[chosen] = False
    raw = fitted.predict(X, calibrated=False)
    return {
        "eigenvalues": unlabelled_eigenvalues(fitted, data),
        "dear": np.array(dear),
        "audit": audit,
        "cv_mean": fitted.cv.mean,
        "cv_std": fitted.cv.std,
        "mean": raw.mean,
        "epistemic_var": raw.epistemic_var,
        "aleatoric_var": raw.aleatoric_var,
    }


def cached_replay(pool: dict, cfg: CampaignConfig, budget: int, key: str, cache: Path | None):
    """:func:`replay`, read from / written to ``cache/key.npz`` when a cache is given."""
    path = None if cache is None else cache / f"{key}.npz"
    if path is not None and path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    state = replay(pool, cfg, budget)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **state)
    return state


def held_out(state: dict, pool: dict, iw: bool = True) -> HeldOut:
    """The accuracy assessment's inputs from a campaign's final state."""
    y, dear = pool["y"], state["dear"]
    unl = np.ones(len(y), dtype=bool)
    unl[dear] = False
    std = np.sqrt(state["epistemic_var"] + state["aleatoric_var"])
    audit = state["audit"]
    return HeldOut(
        y=y[dear],
        cv_mean=state["cv_mean"],
        cv_std=state["cv_std"],
        fit_mean=state["mean"][dear],
        unlabelled_std=std[unl],
        weights=density_ratio(pool["X"], dear) if iw else None,
        audit_residuals=(y[audit] - state["mean"][audit]) if audit.size else None,
        unlabelled_eigenvalues=state.get("eigenvalues"),
    )


ORACLE_AUDIT_SIZES = (8, 20, 40)


def oracle_audit_in_band(
    errors: np.ndarray, sizes=ORACLE_AUDIT_SIZES, draws: int = 2000, seed: int = 0
) -> dict[str, float]:
    """How often an RMSE estimate from ``m`` random candidates' *true* errors of the
    final model lies within [0.75, 1.33] of the pool RMSE.

    A bound no estimate from ``m`` sampled errors can beat on average (here they are
    even the deployed model's own errors, which a real audit would spend ``m`` of the
    budget on): heavy-tailed pool errors make the RMSE of a small sample scatter.
    """
    rng = np.random.default_rng([seed, 0xB0D])
    truth = np.sqrt(np.mean(errors**2))
    out = {}
    for m in sizes:
        pick = np.argsort(rng.random((draws, errors.size)), axis=1)[:, :m]
        ratio = np.sqrt(np.mean(errors[pick] ** 2, axis=1)) / truth
        out[str(m)] = float(np.mean((ratio >= 0.75) & (ratio <= 1.33)))
    return out


def calibration_scores(cal, state: dict, y: np.ndarray, unl: np.ndarray) -> dict:
    """ECE, signed miscalibration area and sharpness of a recalibration over the
    unlabelled candidates, each judged by the recalibrated predictive's own intervals."""
    std = np.sqrt(state["epistemic_var"] + state["aleatoric_var"])[unl]
    z = cal.normalise((y[unl] - state["mean"][unl]) / std)
    return {
        "ece": ece_of_z(z),
        "miscalibration_area": float(np.mean(coverage(z) - LEVELS)),
        "sharpness": float((cal.std_factor * std).mean()),
    }


def evaluate(
    pool: dict,
    rule: str,
    seed: int,
    budget: int,
    audit_size: int,
    surrogate: str,
    calibrations: list[str],
    cache: Path | None,
    pair: str,
) -> dict:
    """Every estimate and recalibration of one campaign, against the truth."""
    y = pool["y"]
    cfg = config(rule, seed, surrogate)
    stop = cfg.stopping
    recal = f"{stop.calibration}_{stop.calibration_weighting}"
    key = f"{pair}_{surrogate}_{rule}_{seed}_{budget}_{recal}"
    state = cached_replay(pool, cfg, budget, key, cache)
    truth = float(np.sqrt(np.mean((state["mean"] - y) ** 2)))
    unl = np.ones(len(y), dtype=bool)
    unl[state["dear"]] = False
    row = {"rule": rule, "seed": seed, "true_rmse": truth}
    row["oracle_audit_in_band"] = oracle_audit_in_band((state["mean"] - y)[unl], seed=seed)
    row["raw"] = calibration_scores(VarianceCalibration(), state, y, unl)
    weighted = held_out(state, pool, True)
    for kind in calibrations:
        for weighting in WEIGHTINGS:
            iw = weighting == "importance"
            cal, m = assess(
                weighted, "cv", 0.9, np.random.default_rng(seed), calibration=kind, weighted=iw
            )
            name = kind if iw else f"{kind}/unweighted"
            row[name] = {
                "std_factor": cal.std_factor,
                "ece_heldout": m["ece"],
                **calibration_scores(cal, state, y, unl),
            }
            if kind == "student_t":
                row[name]["dof"] = cal.dof
    for est, (method, iw, moments, spread) in ESTIMATE_VARIANTS.items():
        rng = np.random.default_rng(seed)
        _, m = assess(weighted, method, 0.9, rng, weighted=iw, moments=moments, spread=spread)
        row[est] = {
            "rmse": m["rmse"],
            "low": m["rmse_low"],
            "high": m["rmse_high"],
            "ratio": m["rmse"] / truth,
            "holds": bool(m["rmse_low"] <= truth <= m["rmse_high"]),
            "high_ge_truth": bool(m["rmse_high"] >= truth),
        }
    if audit_size:
        cfg_a = config(rule, seed, surrogate, "audit", audit_size)
        key_a = f"{key}_audit{audit_size}"
        st = cached_replay(pool, cfg_a, budget, key_a, cache)
        truth_a = float(np.sqrt(np.mean((st["mean"] - y) ** 2)))
        _, m_a = assess(held_out(st, pool, False), "audit", 0.9, np.random.default_rng(seed))
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


def summarise(rows: list[dict], methods: list[str], calibrations: list[str]) -> dict:
    """Fractions in band and intervals holding the truth; ECE medians per rule."""
    out = {}
    for est in methods:
        r = [row[est] for row in rows if est in row]
        ratio = np.array([x["ratio"] for x in r])
        out[est] = {
            "n": len(r),
            "in_band": float(np.mean((ratio >= 0.75) & (ratio <= 1.33))),
            "median_ratio": float(np.median(ratio)),
            "min_ratio": float(np.min(ratio)),
            "interval_holds": float(np.mean([x["holds"] for x in r])),
            "upper_at_least_truth": float(np.mean([x["high_ge_truth"] for x in r])),
        }
    out["oracle_audit_in_band"] = {
        str(m): float(np.mean([row["oracle_audit_in_band"][str(m)] for row in rows]))
        for m in ORACLE_AUDIT_SIZES
    }
    for key in ["raw", *[f"{k}{w}" for k in calibrations for w in ("", "/unweighted")]]:
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
            sharpness_median=float(np.median([row[key]["sharpness"] for row in rows])),
        )
    return out


def tables(rows: list[dict], summary: dict, methods: list[str], calibrations: list[str]) -> str:
    """Markdown: one row per campaign (the ECE of the first recalibration), then the
    summaries."""
    shown, calibrated = methods, calibrations[0]
    lines = [
        "| pool | rule | true RMSE (meV/atom) | "
        + " | ".join(f"{m} est./true" for m in shown)
        + " | ECE raw | ECE calibrated | signed area raw / calibrated |",
        "|---|---|---|" + "---|" * len(shown) + "---|---|---|",
    ]
    for row in rows:
        cells = [f"{row[m]['ratio']:.2f}{'' if row[m]['holds'] else ' (out)'}" for m in shown]
        lines.append(
            f"| {row['pair']} | {row['rule']} s{row['seed']} | {1000 * row['true_rmse']:.2f} | "
            + " | ".join(cells)
            + f" | {row['raw']['ece']:.3f} | {row[calibrated]['ece']:.3f} | "
            f"{row['raw']['miscalibration_area']:+.3f} / "
            f"{row[calibrated]['miscalibration_area']:+.3f} |"
        )
    lines += [
        "",
        "| estimate | est./true in [0.75, 1.33] | median (lowest) est./true | "
        "interval holds truth | upper end >= truth |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        s = summary[m]
        lines.append(
            f"| {m} | {s['in_band']:.0%} | {s['median_ratio']:.2f} ({s['min_ratio']:.2f}) | "
            f"{s['interval_holds']:.0%} | {s['upper_at_least_truth']:.0%} |"
        )
    for m, frac in summary["oracle_audit_in_band"].items():
        lines.append(f"| bound: true errors of {m} random unlabelled candidates | {frac:.0%} |||")
    lines += [
        "",
        "| predictive | median ECE | worst rule's median ECE | median signed area | "
        "median sharpness (meV/atom) |",
        "|---|---|---|---|---|",
    ]
    for key in ["raw", *[f"{k}{w}" for k in calibrations for w in ("", "/unweighted")]]:
        s = summary[key]
        lines.append(
            f"| {key} | {s['ece_median']:.3f} | {s['ece_worst_rule_median']:.3f} | "
            f"{s['miscalibration_area_median']:+.3f} | {1000 * s['sharpness_median']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="*", default=PAIRS)
    ap.add_argument("--rules", nargs="*", default=RULES)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--audit", type=int, default=8, help="audit sample of the audit replay")
    ap.add_argument("--surrogate", choices=sorted(SURROGATES), default="default")
    ap.add_argument(
        "--calibrations",
        nargs="*",
        default=list(CALIBRATIONS),
        help="recalibrations to compare (the first: in the per-campaign table)",
    )
    ap.add_argument("--cache", type=Path, help="folder of replayed campaigns to reuse")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if any(set(p) == set("CuPd") or p in ("CuPd", "PdCu") for p in args.pairs):
        raise SystemExit("Cu-Pd is the blind check: it is never used here")
    t0 = time.perf_counter()
    rows = []
    for pair in args.pairs:
        pool = pool_arrays(pair, args.surrogate)
        for rule in args.rules:
            for seed in range(args.seeds):
                row = evaluate(
                    pool,
                    rule,
                    seed,
                    args.budget,
                    args.audit,
                    args.surrogate,
                    args.calibrations,
                    args.cache,
                    pair,
                )
                row = {"pair": pair, "surrogate": args.surrogate, **row}
                print(json.dumps(row), flush=True)
                rows.append(row)
    methods = ESTIMATES + (["audit"] if args.audit else [])
    summary = summarise(rows, methods, args.calibrations)
    print(
        json.dumps(
            {
                "benchmark": "honest_accuracy",
                "pairs": args.pairs,
                "rules": args.rules,
                "seeds": args.seeds,
                "budget": args.budget,
                "surrogate": args.surrogate,
                "cutoffs": SURROGATES[args.surrogate]["cutoffs"],
                "calibrations": args.calibrations,
                "summary": summary,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    if args.table:
        print()
        print(tables(rows, summary, methods, args.calibrations))


if __name__ == "__main__":
    main()
