"""Surrogate accuracy: the Bayesian cluster expansion against the old isotropic model.

On fully labelled fcc binary EMT pools (``benchmarks/pools.py``; Cu-Pd is never used:
it is the blind check) and the Li0.5CoO2 oxide pool (``Li05CoO2``: the example's
orderings in cells of up to 8 primitive cells, CHGNet relaxations as the oracle), every
candidate's true energy is known, so the **true** RMSE of the posterior mean over all
candidates can be followed as labels are added:

* ``old``: the example's cutoffs ([6.0, 4.5] A: 8 clusters; the oxide: its example's
  [7.0, 5.0] A), isotropic prior
  ``alpha I``, hyperparameters by evidence (``BayesianLinearRegression``);
* ``new``: the largest offered cutoffs (default [10.0, 7.0, 5.5] A), hierarchical prior
  with MAP-II hyperpriors, averaged over the nested sub-bases and over the CHGNet
  energy per atom of the ideal ordering as a delta-learning column, weighted by evidence
  (``BayesianClusterExpansion``, the defaults);
* ``ml_ii``: the same offer and prior with plain evidence maximisation and the single
  most probable alternative (``hyperprior=False, average=False``: the previous model).

Labels come at random or by ``max_variance`` (10 random, then batches of 5 with the
largest epistemic variance of the variant's own model), 10 to 80 labels and 10 % of the
pool, over several seeds. The **floor** of a basis is its 5-fold cross-validated RMSE
with every candidate labelled (isotropic prior, as the issue measured it).

Prints JSON lines (one per fit, then a summary per pair) and writes a plot::

    python benchmarks/surrogate_accuracy.py --pairs CuAu --seeds 1 --max-labels 20
    python benchmarks/surrogate_accuracy.py --timing   # 200 clusters, 1,000 labels
    python benchmarks/surrogate_accuracy.py --variants old pool_prior --max-labels 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from alcampaign.science.bce import BayesianClusterExpansion  # noqa: E402
from alcampaign.science.features import ClusterVectorFeaturizer  # noqa: E402
from alcampaign.science.priors import ColumnInfo  # noqa: E402
from alcampaign.science.surrogate import BayesianLinearRegression  # noqa: E402

OLD_CUTOFFS = [6.0, 4.5]
OFFER_CUTOFFS = [10.0, 7.0, 5.5]
DEFAULT_PAIRS = [
    "CuAu", "AgAu", "NiPt", "CuPt", "AlAg", "PdPt", "AlPt", "AlAu", "AlPd", "Li05CoO2"
]


def pool_arrays(pair: str, offer: list[float]) -> dict:
    """Features of both bases, cluster metadata, truth and cheap energies of a pool."""
    import pools

    p = pools.load(pair)
    atoms = [o.atoms for o in p["orderings"]]
    par = p["parent"]
    old_cutoffs = OLD_CUTOFFS
    if pair == pools.OXIDE:  # the oxide example's own cutoffs
        from alcampaign.config import load_config

        old_cutoffs = load_config(pools.OXIDE_EXAMPLE).features.cutoffs
    old = ClusterVectorFeaturizer(par.atoms, par.chemical_symbols, old_cutoffs)
    big = ClusterVectorFeaturizer(par.atoms, par.chemical_symbols, offer)
    cheap = p["chgnet"] - np.nanmean(p["chgnet"])
    return {
        "X_old": old.featurize(atoms),
        "X_big": big.featurize(atoms),
        "meta": big.cluster_metadata(),
        "y": p["truth"],
        "cheap": np.nan_to_num(cheap),
    }


DEFAULT_VARIANTS = ["old", "new", "ml_ii"]


def variants(data: dict, names: list[str]) -> dict:
    """Each variant of ``names``: (design matrix, model factory).

    ``pool_prior`` (only when asked for) is the new model with the alternatives and
    hyperparameters that its evidence picks from *every* label of the pool, kept fixed
    while the campaign's labels come in (``BayesianClusterExpansion.frozen``). No
    campaign can know them; the variant shows what the best prior of this family would
    give, i.e. how much of the gap to a target is the estimation of hyperparameters
    from few labels and how much the model class.
    """
    info = ColumnInfo.clusters(data["meta"]["order"], data["meta"]["diameter"], 1)
    X_new = np.column_stack([data["X_big"], data["cheap"]])
    out = {
        "old": (data["X_old"], BayesianLinearRegression),
        "new": (X_new, lambda: BayesianClusterExpansion(columns=info)),
        "ml_ii": (
            X_new,
            lambda: BayesianClusterExpansion(columns=info, hyperprior=False, average=False),
        ),
    }
    if "pool_prior" in names:
        full = BayesianClusterExpansion(columns=info).fit(X_new, data["y"])
        out["pool_prior"] = (X_new, full.frozen)
    return {name: out[name] for name in names}


def floor(X: np.ndarray, y: np.ndarray, make, folds: int = 5, seed: int = 0) -> float:
    """K-fold cross-validated RMSE (eV/atom) with every candidate labelled."""
    idx = np.random.default_rng(seed).permutation(len(y))
    pred = np.empty(len(y))
    for fold in np.array_split(idx, folds):
        train = np.setdiff1d(idx, fold)
        pred[fold] = make().fit(X[train], y[train]).predict(X[fold]).mean
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def curve(X, y, make, strategy: str, seed: int, schedule: list[int]):
    """True RMSE over the pool at each label count of ``schedule``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    labelled = list(order[: schedule[0]])
    for n in schedule:
        if strategy == "random":
            labelled = list(order[:n])
        elif len(labelled) < n:
            free = np.setdiff1d(np.arange(len(y)), labelled)
            var = model.predict(X[free]).epistemic_var  # noqa: F821 (the last fit)
            labelled += list(free[np.argsort(-var, kind="stable")[: n - len(labelled)]])
        t0 = time.perf_counter()
        model = make().fit(X[labelled], y[labelled])
        seconds = time.perf_counter() - t0
        rmse = float(np.sqrt(np.mean((model.predict(X).mean - y) ** 2)))
        info = model.to_dict()
        yield n, rmse, seconds, info


def run_pair(
    pair: str,
    seeds: int,
    max_labels: int,
    offer: list[float],
    names: list[str] = DEFAULT_VARIANTS,
) -> list[dict]:
    """Every variant, strategy and seed on one pool; JSON lines as they come."""
    data = pool_arrays(pair, offer)
    y = data["y"]
    n10 = int(np.ceil(0.1 * len(y)))
    schedule = sorted({*range(10, max_labels + 1, 5), *([n10] if n10 <= max_labels else [])})
    floors = {
        "floor_old_basis": floor(data["X_old"], y, BayesianLinearRegression),
        "floor_largest_basis": floor(data["X_big"], y, BayesianLinearRegression),
    }
    head = {
        "pair": pair,
        "n_candidates": len(y),
        "n_offered": data["X_big"].shape[1],
        "ten_percent": n10,
        **{k: v * 1e3 for k, v in floors.items()},
    }
    print(json.dumps({"floors_meV": head}), flush=True)
    rows = []
    for name, (X, make) in variants(data, names).items():
        # the previous model (ml_ii) only where the targets are set: max_variance labels
        for strategy in ("max_variance",) if name == "ml_ii" else ("random", "max_variance"):
            for seed in range(seeds):
                for n, rmse, sec, info in curve(X, y, make, strategy, seed, schedule):
                    row = {
                        "pair": pair,
                        "variant": name,
                        "strategy": strategy,
                        "seed": seed,
                        "n_labels": n,
                        "rmse_meV": round(rmse * 1e3, 3),
                        "fit_s": round(sec, 3),
                        "n_columns": info.get("basis", {}).get("n_columns", X.shape[1]),
                        "cheap_used": info.get("cheap_energy", {}).get("used", False),
                        "n_averaged": len(info.get("model_average", [])) or 1,
                        "log_evidence": round(info["log_evidence"], 2),
                    }
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return [head, *rows]


def summarise(head: dict, rows: list[dict]) -> dict:
    """Median and worst case over seeds at 30 labels and at 10 % of the pool."""

    def at(variant, strategy, n):
        v = [
            r["rmse_meV"]
            for r in rows
            if (r["variant"], r["strategy"], r["n_labels"]) == (variant, strategy, n)
        ]
        return (float(np.median(v)), float(np.max(v))) if v else (None, None)

    n10 = head["ten_percent"]
    out = {
        "pair": head["pair"],
        "floor_meV": round(head["floor_largest_basis"], 2),
        "floor_old_basis_meV": round(head["floor_old_basis"], 2),
    }
    for strategy in ("random", "max_variance"):
        for n in (30, n10):
            old = at("old", strategy, n)
            if old[0] is None:
                continue
            key = f"{strategy}_{n}"
            out[key] = {"old_median": round(old[0], 2), "old_worst": round(old[1], 2)}
            for name in ("new", "ml_ii", "pool_prior"):
                new = at(name, strategy, n)
                if new[0] is None:
                    continue
                out[key].update(
                    {
                        f"{name}_median": round(new[0], 2),
                        f"{name}_worst": round(new[1], 2),
                        f"{name}_reduction": round(1 - new[0] / old[0], 3),
                        f"{name}_worst_reduction": round(1 - new[1] / old[1], 3),
                        f"{name}_over_floor": round(new[0] / head["floor_largest_basis"], 3),
                    }
                )
    return out


def plot(results: dict, path: Path) -> None:
    """One panel per pool: median true RMSE vs labels, old and new, both strategies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for ax, (pair, (head, rows)) in zip(axes[0], results.items(), strict=True):
        for (variant, strategy), style in {
            ("old", "random"): "C0--",
            ("old", "max_variance"): "C0-",
            ("new", "random"): "C3--",
            ("new", "max_variance"): "C3-",
            ("ml_ii", "max_variance"): "C2:",
        }.items():
            sel = [r for r in rows if (r["variant"], r["strategy"]) == (variant, strategy)]
            ns = sorted({r["n_labels"] for r in sel})
            med = [np.median([r["rmse_meV"] for r in sel if r["n_labels"] == n]) for n in ns]
            ax.plot(ns, med, style, label=f"{variant}, {strategy}")
        ax.axhline(head["floor_largest_basis"], color="k", lw=0.8, label="floor, largest basis")
        ax.axhline(
            1.25 * head["floor_largest_basis"], color="k", lw=0.8, ls=":", label="1.25 x floor"
        )
        ax.set_title(f"{pair} ({head['n_candidates']} candidates)")
        ax.set_xlabel("labels")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("true RMSE over the pool (meV/atom)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def timing(n_clusters: int = 200, n_labels: int = 1000, seed: int = 0) -> dict:
    """Seconds to fit with evidence optimisation: one basis, and the scan over sub-bases."""
    rng = np.random.default_rng(seed)
    order = np.r_[
        0, 1, np.full(n_clusters // 2 - 1, 2), np.full(n_clusters - n_clusters // 2 - 1, 3)
    ]
    diameter = np.where(order >= 2, 2.7 + 6 * rng.random(n_clusters), 0.0)
    X = np.column_stack([np.ones(n_labels), rng.uniform(-1, 1, (n_labels, n_clusters - 1))])
    w = rng.normal(size=n_clusters) * 0.02 * np.exp(-np.where(order >= 2, diameter - 2.7, 0))
    y = X @ w + 0.003 * rng.normal(size=n_labels)
    info = ColumnInfo.clusters(order, diameter)
    out = {"n_clusters": n_clusters, "n_labels": n_labels}
    for name, kwargs in {"one_basis": {"select_basis": False}, "basis_scan": {}}.items():
        t0 = time.perf_counter()
        model = BayesianClusterExpansion(columns=info, **kwargs).fit(X, y)
        out[f"{name}_s"] = round(time.perf_counter() - t0, 3)
        out[f"{name}_n_options"] = max(len(model.choices_), 1)
    t0 = time.perf_counter()
    BayesianLinearRegression().fit(X, y)
    out["isotropic_s"] = round(time.perf_counter() - t0, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", nargs="*", default=None, help="pools (default: every labelled one)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-labels", type=int, default=80)
    ap.add_argument("--offer", type=float, nargs="+", default=OFFER_CUTOFFS)
    ap.add_argument("--plot", type=Path, default=None, help="write the plot here (PNG)")
    ap.add_argument("--timing", action="store_true", help="only the fitting-time benchmark")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        choices=[*DEFAULT_VARIANTS, "pool_prior"],
        help="pool_prior: the hyperparameters every label of the pool would choose",
    )
    args = ap.parse_args()
    if args.timing:
        with threadpool_limits(limits=2):
            print(json.dumps({"timing": timing()}), flush=True)
        return
    import pools

    pairs = args.pairs or [p for p in DEFAULT_PAIRS if pools.pool_file(p).exists()]
    if any(pools.is_blind(p) for p in pairs):
        raise SystemExit(f"{pools.BLIND} is the blind check: never benchmark on it")
    results = {}
    for pair in pairs:
        head, *rows = run_pair(pair, args.seeds, args.max_labels, args.offer, args.variants)
        results[pair] = (head, rows)
        print(json.dumps({"summary": summarise(head, rows)}), flush=True)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
