"""Ground-state search: oracle calls until every convex-hull ground state is labelled.

Replays campaigns against fully labelled fcc binary EMT pools (``benchmarks/pools.py``;
fcc Cu-Pd is never used: it is the blind check) with the science code the controller
runs (:mod:`alcampaign.science.learning`: initial design with the end members, fit,
sampled hulls, selection, the ``missing_ground_states`` stopping criterion). For each
pool, rule, batch setting and seed it records

* ``calls_all``: oracle calls (the initial design included) when every true ground
  state (vertex of the EMT hull) is labelled; the budget when never;
* ``stops``: for each hull tolerance of :data:`TOLERANCES` (``stopping.hull_tolerance``),
  the calls when ``missing_ground_states`` (expected number of missing ground states
  < ``--missing``, from ``min_labels`` calls on) first holds, how many true ground
  states were unlabelled then (``missing``), how far the labelled hull lay above the
  true one (``hull_error``, eV/atom) and the calls spent after the last ground state
  was found (``after_last``);
* ``trace``: those numbers on every iteration.

Every rule sees the same initial design for a seed. Prints one JSON line per run and
one per (pool, batch, rule) summary; ``--table`` adds a markdown table. Usage::

    python benchmarks/ground_state_search.py --pairs NiPt --seeds 2 --rules ground_state
    python benchmarks/ground_state_search.py --table        # NiPt CuPt AlAg, 10 seeds (long)
    python benchmarks/ground_state_search.py --pairs NiPt --batches 1 --seeds 5 --first-seed 5

``--surrogate`` picks the model: ``default`` (the campaign's default features and
surrogate) or ``previous`` (the first runs' bare cluster vectors, cutoffs [6, 4.5]).

The ``--speed`` mode times one ``ground_state`` decision on a synthetic pool (1,000
samples, 100,000 candidates, d = 64) instead.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pools

from alcampaign.campaign.controller import learning_settings
from alcampaign.config import CampaignConfig
from alcampaign.science.hull import hull_energies
from alcampaign.science.learning import (
    TrainingData,
    fit_and_validate,
    ground_states,
    initial_design,
    select,
)

RULES = ["ground_state", "lower_confidence_bound", "max_variance", "random"]
SETTINGS = {1: 5, 5: 10}  # batch size: initial design size


#: ``default``: a campaign's default features and surrogate (cutoffs [10, 7, 5.5], the
#: clusters' order and diameter for the hierarchical prior, the CHGNet delta term), as
#: ``examples/cuau_emt.yaml``; ``previous``: what the first runs of this benchmark used
#: (the demo's former cutoffs [6, 4.5], no cluster metadata, no CHGNet column).
SURROGATES = {
    "default": {"cutoffs": [10.0, 7.0, 5.5], "prescreen": True, "metadata": True},
    "previous": {"cutoffs": [6.0, 4.5], "prescreen": False, "metadata": False},
}


def config_for(rule: str, seed: int, batch: int, n_initial: int, n_samples: int,
               surrogate: str = "default"):
    """A campaign config carrying the rule (the structure file is never read here)."""
    variant = SURROGATES[surrogate]
    return CampaignConfig.model_validate(
        {
            "name": "bench",
            "seed": seed,
            "system": {"structure": "unused.cif"},
            "features": {"kind": "cluster_vector", "cutoffs": variant["cutoffs"]},
            "prescreen": {"enabled": variant["prescreen"]},
            "acquisition": {"rule": rule, "batch_size": batch, "n_samples": n_samples},
            "initial_design": {"n_initial": n_initial},
        }
    )


def featurize(pool: dict, surrogate: str):
    """Design matrix of a pool's orderings as the controller builds it, and its columns
    (``None`` for the ``previous`` variant: bare cluster vectors)."""
    from alcampaign.science.features import ClusterVectorFeaturizer
    from alcampaign.science.learning import design_matrix

    variant = SURROGATES[surrogate]
    parent = pool["parent"]
    feat = ClusterVectorFeaturizer(parent.atoms, parent.chemical_symbols, variant["cutoffs"])
    raw = feat.featurize([o.atoms for o in pool["orderings"]])
    if not variant["metadata"]:
        return raw, None
    settings = learning_settings(config_for("random", 0, 1, 5, 10, surrogate))
    return design_matrix(settings, "cluster_vector", raw, pool["chgnet"], feat.cluster_metadata())


TOLERANCES = (0.0, 0.001, 0.002, 0.005, 0.01)  # eV/atom, counted on every iteration


def labelled_hull_error(comps: np.ndarray, emt: np.ndarray, asked: list[int],
                        true_hull: np.ndarray) -> float:
    """How far the hull of the labelled candidates lies above the true hull (the
    largest gap over the pool's compositions, eV/atom; 0 once every ground state is
    labelled)."""
    lab = hull_energies(comps[asked], emt[asked], comps)
    return float(np.max(lab - true_hull))


def replay(pool, X, rule, seed, batch, n_initial, budget, missing, n_samples,
           stopping: bool = True, columns=None, surrogate: str = "default") -> dict:
    """One campaign against the labelled pool; returns its counts.

    Every iteration records the expected number of missing ground states at each of
    :data:`TOLERANCES` (one set of samples; the rule's picks do not depend on the
    tolerance), the number of true ground states unlabelled and how far the labelled
    hull lies above the true one, so the stopping rule is evaluated at every tolerance
    from one run. The run ends at the budget, or once every ground state is labelled
    and the criterion has held at every tolerance but 0.

    With ``stopping`` false the hulls are sampled only where the rule needs them and
    the stopping criterion is not followed (faster for rules that do not sample)."""
    config = config_for(rule, seed, batch, n_initial, n_samples, surrogate)
    settings = learning_settings(config)  # what the controller's decide() gets
    emt, x = pool["emt"], pool["x"]
    comps = np.column_stack([1 - x, x])
    true_hull = hull_energies(comps, emt)
    truth = set(pool["ground_states"].tolist())
    n = len(emt)
    rng = np.random.default_rng(seed)
    asked, _ = initial_design(n_initial, n, np.random.default_rng(seed), comps, pool["chgnet"])
    out = {"pair": pool["pair"], "rule": rule, "seed": seed, "batch": batch,
           "surrogate": surrogate,
           "calls_all": None, "stopping": stopping, "trace": []}
    stops: dict[float, int] = {}
    min_labels = config.stopping.min_labels
    while True:
        calls = len(asked)
        if out["calls_all"] is None and truth <= set(asked):
            out["calls_all"] = calls
        data = TrainingData(X, np.array(asked), emt[asked], columns=columns)
        fitted, _ = fit_and_validate(settings, data, rng, validate=False)
        labels = np.full(n, np.nan)
        labels[asked] = emt[asked]
        available = np.isnan(labels)
        members = np.arange(n)
        est = None
        if rule == "ground_state" or stopping:
            est = ground_states(settings, fitted, X, labels, comps, members, rng,
                                report_tolerances=TOLERANCES)
        if est is not None and stopping:
            at = [round(est.missing_at[t], 4) for t in TOLERANCES]
            out["trace"].append({
                "calls": calls, "missing_at": at,
                "changed_at": [round(est.changed_at[t], 4) for t in TOLERANCES],
                "unlabelled": len(truth - set(asked)),
                "hull_error": round(labelled_hull_error(comps, emt, asked, true_hull), 5),
                "noise_sd": round(float(np.sqrt(fitted.model.noise_variance())), 5)})
            for t, m in zip(TOLERANCES, at, strict=True):
                if t not in stops and calls >= min_labels and m < missing:
                    stops[t] = calls
        done = not stopping or all(t in stops for t in TOLERANCES if t > 0)
        if (out["calls_all"] is not None and done) or calls >= budget:
            break
        k = min(batch, budget - calls)
        _, requests = select(
            settings, fitted, X, available, np.zeros(n, dtype=bool), k, rng, comps,
            labels=labels, hull=None if est is None else (members, est),
        )
        asked += [r.index for r in requests]
    out["stops"] = {str(t): stop_record(out, stops.get(t)) for t in TOLERANCES}
    return out


def stop_record(row: dict, calls: int | None) -> dict | None:
    """What the campaign had when the criterion first held at ``calls`` (None: never)."""
    if calls is None:
        return None
    at = next(r for r in row["trace"] if r["calls"] == calls)
    after = None
    if row["calls_all"] is not None and row["calls_all"] <= calls:
        after = calls - row["calls_all"]
    return {"calls": calls, "missing": at["unlabelled"], "hull_error": at["hull_error"],
            "after_last": after}


def first_within(row: dict, tolerance: float) -> int | None:
    """Calls when the labelled hull first lay within ``tolerance`` of the true hull."""
    return next((r["calls"] for r in row["trace"] if r["hull_error"] <= tolerance + 1e-9),
                None)


def summarise(rows: list[dict], budget: int) -> dict:
    """Median and worst calls to every ground state, and how the stopping rule did at
    each tolerance: ``complete``: stopped with every ground state labelled;
    ``hull_within_tolerance``: stopped with the labelled hull within the tolerance of
    the true hull everywhere; ``calls_to_within``: calls until it first was (median,
    worst; the budget when never); ``after_within``: calls the stop came after that
    (median, worst), ``within_10`` how often at most 10."""
    calls = [r["calls_all"] if r["calls_all"] is not None else budget for r in rows]
    out = {
        "pair": rows[0]["pair"], "rule": rows[0]["rule"], "batch": rows[0]["batch"],
        "stopping_followed": rows[0]["stopping"],
        "seeds": len(rows),
        "median_calls": float(np.median(calls)),
        "worst_calls": int(max(calls)),
        "not_reached": sum(r["calls_all"] is None for r in rows),
        "stopping": {},
    }
    if not rows[0]["stopping"]:
        return out
    for t in TOLERANCES:
        stops = [(r, r["stops"][str(t)]) for r in rows]
        stopped = [(r, s) for r, s in stops if s is not None]
        within = [first_within(r, t) or budget for r in rows]
        good = [(r, s) for r, s in stopped if s["hull_error"] <= t + 1e-9]
        after = [s["calls"] - first_within(r, t) for r, s in good]
        out["stopping"][str(t)] = {
            "stopped": len(stopped),
            "complete": sum(s["missing"] == 0 for _, s in stopped),
            "hull_within_tolerance": len(good),
            "median_stop_calls": float(np.median([s["calls"] for _, s in stopped]))
            if stopped else None,
            "calls_to_within": [float(np.median(within)), int(max(within))],
            "after_within": [float(np.median(after)), int(max(after))] if after else None,
            "within_10": sum(a <= 10 for a in after),
        }
    return out


def speed(n: int = 100_000, d: int = 64, n_samples: int = 1000, seed: int = 0) -> dict:
    """Time one ``ground_state`` decision (sampled hulls + a batch of 5) on synthetic data.

    A ternary pool (compositions of cells of up to 12 atoms), random features with an
    intercept and a composition term, a synthetic truth (5 meV/atom misfit) and the
    posterior of a Bayesian linear model fitted to 200 labels (the end members among
    them): a mid-campaign decision.
    """
    from alcampaign.science.acquisition import GroundState, Pool
    from alcampaign.science.hull import end_member_indices, estimate_ground_states
    from alcampaign.science.surrogate import BayesianLinearRegression

    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 13, n)
    a = np.floor(rng.random(n) * (sizes + 1))
    b = np.floor(rng.random(n) * (sizes - a + 1))
    comps = np.column_stack([a, b, sizes - a - b]) / sizes[:, None]
    X = np.column_stack([np.ones(n), comps[:, :2], rng.normal(size=(n, d - 3)) * 0.3])
    truth = X @ np.r_[-4.0, 0.1, -0.2, rng.normal(size=d - 3) * 0.02]
    truth += 0.4 * comps[:, 0] * comps[:, 1] * -1 + rng.normal(size=n) * 0.005
    train = np.r_[end_member_indices(comps), rng.choice(n, 200, replace=False)]
    model = BayesianLinearRegression().fit(X[train], truth[train])
    pred = model.predict(X)
    labels = np.full(n, np.nan)
    labels[train] = truth[train]
    t0, c0 = time.perf_counter(), time.process_time()
    est = estimate_ground_states(
        pred.mean, X, model.covariance_, comps, labels, n_samples, rng, model.noise_variance()
    )
    t1 = time.perf_counter()
    pool = Pool(pred, X=X, covariance=model.covariance_, noise_var=model.noise_variance(),
                compositions=comps, labels=labels, ground_states=est)
    sel = GroundState(n_samples).select(pool, 5, rng)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"benchmark": "ground_state_speed", "n": n, "d": d, "n_samples": n_samples,
            "distinct_compositions": len(np.unique(np.round(comps, 8), axis=0)),
            "contenders": int(est.contenders.size),
            "expected_missing": round(est.expected_missing, 3),
            "hull_seconds": round(t1 - t0, 2), "batch5_seconds": round(t2 - t1, 2),
            "total_seconds": round(t2 - t0, 2), "cpu_seconds": round(c2 - c0, 2),
            "picked": sel.indices.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="*", default=["NiPt", "CuPt", "AlAg"])
    ap.add_argument("--rules", nargs="*", default=RULES)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 5])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first-seed .. first-seed + seeds - 1 (to extend a stored run)")
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--missing", type=float, default=0.1)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--surrogate", choices=sorted(SURROGATES), default="default")
    ap.add_argument("--stopping-rules", nargs="*",
                    default=["ground_state", "lower_confidence_bound"],
                    help="rules whose runs also follow missing_ground_states")
    ap.add_argument("--tolerance", type=float, default=0.005,
                    help="hull tolerance (eV/atom, one of TOLERANCES) shown in the table")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--summarise", metavar="JSONL",
                    help="only print the summaries and tables of runs written earlier")
    ap.add_argument("--speed", action="store_true")
    args = ap.parse_args()
    if args.speed:
        print(json.dumps(speed(n_samples=args.samples)), flush=True)
        return
    if args.summarise:
        resummarise(args.summarise, args.budget, args.tolerance)
        return
    summaries = []
    for pair in args.pairs:
        if pools.is_blind(pair):
            raise SystemExit(f"{pools.BLIND} is the blind check: not benchmarked here")
        pool = pools.load(pair)
        X, columns = featurize(pool, args.surrogate)
        for batch in args.batches:
            for rule in args.rules:
                rows = []
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    t0 = time.perf_counter()
                    row = replay(pool, X, rule, seed, batch, SETTINGS.get(batch, 10),
                                 args.budget, args.missing, args.samples,
                                 rule in args.stopping_rules, columns, args.surrogate)
                    row["seconds"] = round(time.perf_counter() - t0, 1)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                s = summarise(rows, args.budget)
                s["n_ground_states"] = len(pool["ground_states"])
                summaries.append(s)
                print(json.dumps({"summary": s}), flush=True)
    if args.table:
        print_table(summaries, args.tolerance)


def resummarise(path: str, budget: int, tolerance: float) -> None:
    """Summaries and tables of the runs in a JSON-lines file of this script."""
    rows = [json.loads(line) for line in open(path) if line.startswith('{"pair"')]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["pair"], r["batch"], r["rule"]), []).append(r)
    summaries = []
    for (pair, _, _), runs in groups.items():
        s = summarise(runs, budget)
        s["n_ground_states"] = len(pools.load(pair)["ground_states"])
        summaries.append(s)
        print(json.dumps({"summary": s}))
    print_table(summaries, tolerance)


def print_table(summaries: list[dict], tolerance: float) -> None:
    """Markdown: calls to every ground state and the stopping rule at ``tolerance``."""
    print("\n| pool (ground states) | batch | rule | median calls to all | worst |")
    print("|---|---|---|---|---|")
    for s in summaries:
        miss = f" ({s['not_reached']} not reached)" if s["not_reached"] else ""
        print(f"| {s['pair']} ({s['n_ground_states']}) | {s['batch']} | {s['rule']} | "
              f"{s['median_calls']:g} | {s['worst_calls']}{miss} |")
    meV = f"{1000 * tolerance:g} meV/atom"
    print(f"\n| pool | batch | rule | calls until the labelled hull is within {meV} "
          "(median, worst) | stopped | hull within it at the stop | every ground state "
          "labelled at the stop | stop calls (median) | calls after the hull was within "
          "(median, worst) | <= 10 after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        st = s["stopping"].get(str(tolerance))
        if not st:
            continue
        n = s["seeds"]
        w, a = st["calls_to_within"], st["after_within"]
        print(f"| {s['pair']} | {s['batch']} | {s['rule']} | {w[0]:g}, {w[1]} | "
              f"{st['stopped']}/{n} | {st['hull_within_tolerance']}/{n} | "
              f"{st['complete']}/{n} | {st['median_stop_calls'] or '-'} | "
              f"{'-' if a is None else f'{a[0]:g}, {a[1]}'} | {st['within_10']}/{n} |")


if __name__ == "__main__":
    main()
