"""The report's plots: one function per plot (matplotlib, Agg: no screen needed).

Each function takes the :class:`~alcampaign.report.collect.CampaignData` (and, for the
hull, :func:`~alcampaign.report.collect.hull_table` of it) and returns a figure, or
``None`` when the campaign has nothing to draw yet (no model, fewer than two labels,
no history). :func:`figures` draws them all, keyed by the PNG's name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from alcampaign.report.collect import (
    ON_HULL,
    CampaignData,
    calibration_curve,
    cv_targets,
)
from alcampaign.science.calibration import expected_calibration_error


def _new(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def _error_curve(history: list[dict]) -> tuple[np.ndarray, ...] | None:
    pts = [
        (h["n_oracle_calls"], h["metrics"].get("rmse"), h["metrics"].get("mae"))
        for h in history
        if h["metrics"].get("rmse") is not None
    ]
    if not pts:
        return None
    return tuple(np.array(v, dtype=float) for v in zip(*pts, strict=True))


def learning_curve(data: CampaignData, hull: dict | None = None):
    """Cross-validated RMSE and MAE against oracle calls, with the baseline campaign's
    (``--baseline``) when given, and the targets."""
    fig, ax = _new("Learning curve (cross-validated)", "oracle calls", "error (meV/atom)")
    runs = [(data.doc, data.doc["name"], "-o")]
    if data.baseline is not None:
        runs.append((data.baseline, f"{data.baseline['name']} (baseline)", "--s"))
    for doc, label, style in runs:
        curve = _error_curve(doc.get("history") or [])
        if curve is None:
            continue
        calls, rmse, mae = curve
        ax.plot(calls, 1000 * rmse, style, label=f"RMSE {label}")
        ax.plot(calls, 1000 * mae, style, alpha=0.6, label=f"MAE {label}")
    stopping = data.doc["config"].get("stopping", {})
    for key in ("rmse_target", "mae_target"):
        if stopping.get(key):
            ax.axhline(1000 * stopping[key], color="grey", ls=":", label=key)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return fig


def _cv(data: CampaignData):
    cv = (data.model or {}).get("cv_predictions")
    if not cv:
        return None
    return cv_targets(data), np.array(cv["mean"]), np.array(cv["std"])


def parity(data: CampaignData, hull: dict | None = None):
    """Out-of-fold predictions (with their std) against the oracle labels."""
    cv = _cv(data)
    if cv is None:
        return None
    y, mean, std = cv
    fig, ax = _new(
        "Parity: surrogate (out-of-fold) vs oracle", "oracle (eV/atom)", "surrogate (eV/atom)"
    )
    ax.errorbar(y, mean, yerr=std, fmt="o", ms=3, alpha=0.7)
    lim = [min(y.min(), mean.min()), max(y.max(), mean.max())]
    ax.plot(lim, lim, "k--", lw=1)
    return fig


def calibration(data: CampaignData, hull: dict | None = None):
    """Observed against nominal coverage of the out-of-fold predictive intervals."""
    cv = _cv(data)
    if cv is None:
        return None
    y, mean, std = cv
    nominal, observed = calibration_curve(y, mean, std)
    ece = expected_calibration_error(y, mean, std)
    fig, ax = _new(f"Calibration (ECE {ece:.3f})", "nominal coverage", "observed coverage")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot(nominal, observed, "o-")
    return fig


def error_vs_uncertainty(data: CampaignData, hull: dict | None = None):
    """Out-of-fold |error| against the predicted sigma."""
    cv = _cv(data)
    if cv is None:
        return None
    y, mean, std = cv
    fig, ax = _new(
        "Error vs predicted uncertainty", "predicted sigma (meV/atom)", "|error| (meV/atom)"
    )
    ax.scatter(1000 * std, 1000 * np.abs(y - mean), s=10)
    top = 1000 * max(std.max(), np.abs(y - mean).max())
    ax.plot([0, top], [0, top], "k--", lw=1, label="|error| = sigma")
    ax.legend(fontsize=7)
    return fig


def convex_hull(data: CampaignData, hull: dict | None = None):
    """Formation energies: the unlabelled candidates as predicted by the latest model
    (mean, error bar one predictive std), the labelled ones, and the labelled hull
    through the ground states. Where the campaign samples hulls (``ground_state`` rule,
    ``missing_ground_states`` stopping), every candidate is coloured by its P(on hull)
    from the latest samples, and the title gives the expected number of ground states
    not yet labelled."""
    if not hull:
        return None
    missing = (data.doc.get("metrics") or {}).get("missing_ground_states")
    title = f"Convex hull ({hull['method']})"
    if missing is not None:
        title += f"\nexpected missing ground states: {missing:.2g}"
    fig, ax = _new(title, f"fraction {hull['x_element']}", "formation energy (eV/atom)")
    colour = _p_colour(hull)
    pred = hull.get("predicted")
    if pred and pred["ids"]:
        ax.errorbar(
            pred["x"],
            pred["formation_energy"],
            yerr=pred["std"],
            fmt="none" if colour else ".",
            ms=3,
            lw=0.6,
            color="0.6",
            alpha=0.5,
            label=f"unlabelled: predicted, ± 1 std (model {pred['model_iteration']})",
        )
        if colour:
            colour(ax, pred["x"], pred["formation_energy"], pred.get("p_on_hull"), "o", 10)
    x, e = np.array(hull["x"]), np.array(hull["formation_energy"])
    on = np.array(hull["e_above_hull"]) < ON_HULL
    if colour:
        colour(ax, x, e, hull.get("p_on_hull"), "s", 22, label="labelled", edge="k")
    else:
        ax.scatter(x[~on], e[~on], s=14, color="C0", zorder=3, label="labelled")
    order = np.argsort(x[on])
    ax.plot(x[on][order], e[on][order], "r-", zorder=4, lw=1, label="labelled hull")
    ax.plot(x[on][order], e[on][order], "ro", mfc="none", ms=8, zorder=5,
            label="ground states")
    ax.legend(fontsize=7)
    return fig


def _p_colour(hull: dict):
    """A function drawing points coloured by P(on hull) (one shared colour bar), or
    ``None`` when no candidate carries one."""
    values = [*(hull.get("p_on_hull") or []), *((hull.get("predicted") or {}).get("p_on_hull")
                                              or [])]
    if not any(v is not None for v in values):
        return None
    state = {"bar": None}

    def draw(ax, x, e, p, marker, size, label=None, edge="none"):
        p = np.array([np.nan if v is None else v for v in (p or [None] * len(x))], float)
        art = ax.scatter(x, e, c=np.nan_to_num(p, nan=0.0), cmap="viridis", vmin=0, vmax=1,
                         marker=marker, s=size, edgecolors=edge, linewidths=0.5, zorder=3,
                         label=label)
        if state["bar"] is None:
            state["bar"] = ax.figure.colorbar(art, ax=ax, label="P(on hull)")
        return art

    return draw


def acquisitions(data: CampaignData, hull: dict | None = None):
    """Questions asked per iteration, oracle and cheap fidelity stacked."""
    history = data.doc.get("history") or []
    if not history:
        return None
    its = [h["iteration"] for h in history]
    dear = [len(h.get("acquired") or []) for h in history]
    fig, ax = _new("Acquisitions per iteration", "iteration", "questions asked")
    ax.bar(its, dear, label="oracle")
    cheap = [len(h.get("acquired_cheap") or []) for h in history]
    ax.bar(its, cheap, bottom=dear, label="cheap fidelity")
    ax.legend(fontsize=7)
    return fig


def coverage_diversity(data: CampaignData, hull: dict | None = None):
    """Coverage of the pool by the training set and its kernel log-determinant."""
    div = [(h["iteration"], h["diversity"]) for h in data.doc.get("history") or []]
    div = [(i, d) for i, d in div if d]
    if not div:
        return None
    fig, ax = _new("Coverage and diversity", "iteration", "coverage of the pool")
    its = [i for i, _ in div]
    ax.plot(its, [d["coverage"] for _, d in div], "o-", label="coverage")
    ax2 = ax.twinx()
    ax2.plot(its, [d["kernel_logdet"] for _, d in div], "s--", color="C1", label="kernel log det")
    ax2.set_ylabel("kernel log det of the training set")
    return fig


def cost(data: CampaignData, hull: dict | None = None):
    """Cost and oracle calls spent per iteration, with the budget."""
    history = data.doc.get("history") or []
    if not history:
        return None
    its = [h["iteration"] for h in history]
    fig, ax = _new("Oracle cost spent", "iteration", "cost")
    ax.plot(its, [h.get("cost_spent") or h["n_oracle_calls"] for h in history], "o-", label="cost")
    ax.plot(its, [h["n_oracle_calls"] for h in history], "s--", label="oracle calls")
    budget = data.doc["config"].get("stopping", {}).get("max_oracle_calls")
    if budget:
        ax.axhline(budget, color="grey", ls=":", label="budget")
    ax.legend(fontsize=7)
    return fig


PLOTS: dict[str, Callable] = {
    "learning_curve": learning_curve,
    "parity": parity,
    "calibration": calibration,
    "error_vs_uncertainty": error_vs_uncertainty,
    "convex_hull": convex_hull,
    "acquisitions": acquisitions,
    "coverage_diversity": coverage_diversity,
    "cost": cost,
}


def figures(data: CampaignData, hull: dict | None) -> dict:
    """Every plot the campaign has data for, keyed by name (the PNG's stem)."""
    out = {}
    for key, plot in PLOTS.items():
        fig = plot(data, hull)
        if fig is not None:
            out[key] = fig
    return out
