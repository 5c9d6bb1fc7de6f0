"""Campaign reports: PNG plots and one self-contained HTML page.

:func:`collect` reads what a campaign stored (history, latest model with its
out-of-fold predictions, labels, compositions) through
:class:`~alcampaign.store.facade.CampaignStores`; :func:`write_report` draws every plot with
matplotlib (Agg, no screen needed), writes them as PNG, embeds them in ``index.html``,
and writes the numbers it shows to ``summary.json``.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

from alcampaign.science.acquisition import hull_energies
from alcampaign.science.stopping import expected_calibration_error

LEVELS = np.arange(0.05, 1.0, 0.1)


@dataclass
class CampaignData:
    """Everything a report shows, read from the stores once."""

    doc: dict
    model: dict | None
    labels: list[dict]
    compositions: dict[str, dict[str, float]]
    acquisitions: list[dict]
    baseline: dict | None = None


def collect(stores, name: str, baseline: str | None = None) -> CampaignData:
    """Read a campaign's documents for a report.

    Raises
    ------
    KeyError
        No campaign of that name (or baseline).
    """
    doc = stores.get_campaign(name)
    if doc is None:
        raise KeyError(f"no campaign named {name!r} in this store")
    base = stores.get_campaign(baseline) if baseline else None
    if baseline and base is None:
        raise KeyError(f"no baseline campaign named {baseline!r} in this store")
    fidelity = doc["config"]["oracle"]["fidelity"]
    labels = stores.get_labels(name, fidelity, ["status", "energy_per_atom", "cost", "iteration"])
    acquired = stores.candidate_table(
        name,
        ["composition", "state", "acquisition", "formula"],
        {"state": {"$in": ["acquired", "requested", "labelled", "failed"]}},
    )
    return CampaignData(
        doc=doc,
        model=stores.latest_model(name),
        labels=labels,
        compositions={d["candidate_id"]: d["composition"] for d in acquired},
        acquisitions=[
            {
                "candidate_id": d["candidate_id"],
                "formula": d.get("formula"),
                "state": d["state"],
                **(d.get("acquisition") or {}),
            }
            for d in acquired
        ],
        baseline=base,
    )


# -- numbers -------------------------------------------------------------------------


def calibration_curve(y, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Nominal and observed coverage of central predictive intervals."""
    z = np.abs(np.asarray(y) - np.asarray(mean)) / np.asarray(std)
    observed = np.array([(z <= norm.ppf(0.5 + 0.5 * p)).mean() for p in LEVELS])
    return LEVELS, observed


def hull_table(data: CampaignData) -> dict | None:
    """Labelled energies, their distance to the convex hull, and the ground states.

    Uses pymatgen's ``PhaseDiagram`` when every element has a labelled elemental
    entry, else the lower hull over the labelled compositions
    (:func:`alcampaign.science.acquisition.hull_energies`).
    """
    good = [lab for lab in data.labels if lab["status"] == "success"]
    if len(good) < 2:
        return None
    comps = [data.compositions[lab["candidate_id"]] for lab in good]
    elements = sorted({el for c in comps for el in c})
    amounts = np.array([[c.get(el, 0.0) for el in elements] for c in comps])
    fractions = amounts / amounts.sum(axis=1, keepdims=True)
    energies = np.array([lab["energy_per_atom"] for lab in good])
    method = "lower hull of the labelled compositions"
    try:
        from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
        from pymatgen.core import Composition

        entries = [
            PDEntry(Composition(c), e * sum(c.values()))
            for c, e in zip(comps, energies, strict=True)
        ]
        pd = PhaseDiagram(entries)
        above = np.array([pd.get_e_above_hull(en) for en in entries])
        formation = np.array([pd.get_form_energy_per_atom(en) for en in entries])
        method = "pymatgen PhaseDiagram"
    except Exception:  # no elemental references: a pseudo-binary such as Li_x CoO2
        above = energies - hull_energies(fractions, energies)
        varying = np.ptp(fractions, axis=0)
        j = int(np.argmax(varying))
        lo, hi = np.argmin(fractions[:, j]), np.argmax(fractions[:, j])
        slope = (energies[hi] - energies[lo]) / max(fractions[hi, j] - fractions[lo, j], 1e-12)
        formation = energies - (energies[lo] + slope * (fractions[:, j] - fractions[lo, j]))
    varying = np.ptp(fractions, axis=0)
    axis = int(np.argmax(varying))
    on_hull = above < 1e-6
    return {
        "method": method,
        "x_element": elements[axis],
        "x": fractions[:, axis].tolist(),
        "formation_energy": formation.tolist(),
        "e_above_hull": above.tolist(),
        "ground_states": [good[i]["candidate_id"] for i in np.flatnonzero(on_hull)],
    }


def summary(data: CampaignData, hull: dict | None) -> dict:
    """The numbers the report shows (also written to ``summary.json``); ``hull`` is
    :func:`hull_table` of the same data."""
    doc = data.doc
    out = {
        "name": doc["name"],
        "state": doc.get("state"),
        "iteration": doc.get("iteration"),
        "n_oracle_calls": doc.get("n_oracle_calls"),
        "cost_spent": doc.get("cost_spent"),
        "stop_reason": doc.get("stop_reason"),
        "metrics": doc.get("metrics") or {},
        "criteria": doc.get("criteria") or [],
        "n_candidates": (doc.get("enumeration") or {}).get("n_candidates"),
        "n_failed": sum(lab["status"] != "success" for lab in data.labels),
    }
    cv = (data.model or {}).get("cv_predictions")
    if cv:
        y = _cv_targets(data)
        out["cv_ece_recomputed"] = expected_calibration_error(
            y, np.array(cv["mean"]), np.array(cv["std"])
        )
    if hull:
        out["ground_states"] = hull["ground_states"]
        out["hull_method"] = hull["method"]
    return out


def _cv_targets(data: CampaignData) -> np.ndarray:
    energy = {lab["candidate_id"]: lab["energy_per_atom"] for lab in data.labels}
    return np.array([energy[cid] for cid in data.model["training_ids"]])


# -- plots ---------------------------------------------------------------------------


def _figures(data: CampaignData, hull: dict | None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = data.doc.get("history") or []
    stopping = data.doc["config"].get("stopping", {})
    figs = {}

    def new(title, xlabel, ylabel):
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        return fig, ax

    # Learning curve.
    fig, ax = new("Learning curve (cross-validated)", "oracle calls", "error (meV/atom)")
    for source, style in ((history, "-o"), ((data.baseline or {}).get("history") or [], "--s")):
        label = data.doc["name"] if source is history else f"{data.baseline['name']} (baseline)"
        pts = [
            (h["n_oracle_calls"], h["metrics"].get("rmse"), h["metrics"].get("mae"))
            for h in source
            if h["metrics"].get("rmse") is not None
        ]
        if pts:
            calls, rmse, mae = map(np.array, zip(*pts, strict=True))
            ax.plot(calls, 1000 * rmse, style, label=f"RMSE {label}")
            ax.plot(calls, 1000 * mae, style, alpha=0.6, label=f"MAE {label}")
    for key in ("rmse_target", "mae_target"):
        if stopping.get(key):
            ax.axhline(1000 * stopping[key], color="grey", ls=":", label=key)
    ax.legend(fontsize=7)
    figs["learning_curve"] = fig

    cv = (data.model or {}).get("cv_predictions")
    if cv:
        y = _cv_targets(data)
        mean, std = np.array(cv["mean"]), np.array(cv["std"])
        fig, ax = new(
            "Parity: surrogate (out-of-fold) vs oracle", "oracle (eV/atom)", "surrogate (eV/atom)"
        )
        ax.errorbar(y, mean, yerr=std, fmt="o", ms=3, alpha=0.7)
        lim = [min(y.min(), mean.min()), max(y.max(), mean.max())]
        ax.plot(lim, lim, "k--", lw=1)
        figs["parity"] = fig

        nominal, observed = calibration_curve(y, mean, std)
        ece = expected_calibration_error(y, mean, std)
        fig, ax = new(f"Calibration (ECE {ece:.3f})", "nominal coverage", "observed coverage")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.plot(nominal, observed, "o-")
        figs["calibration"] = fig

        fig, ax = new(
            "Error vs predicted uncertainty", "predicted sigma (meV/atom)", "|error| (meV/atom)"
        )
        ax.scatter(1000 * std, 1000 * np.abs(y - mean), s=10)
        top = 1000 * max(std.max(), np.abs(y - mean).max())
        ax.plot([0, top], [0, top], "k--", lw=1, label="|error| = sigma")
        ax.legend(fontsize=7)
        figs["error_vs_uncertainty"] = fig

    if hull:
        fig, ax = new(
            f"Convex hull ({hull['method']})",
            f"fraction {hull['x_element']}",
            "formation energy (eV/atom)",
        )
        x, e = np.array(hull["x"]), np.array(hull["formation_energy"])
        on = np.array(hull["e_above_hull"]) < 1e-6
        ax.scatter(x[~on], e[~on], s=12, alpha=0.6, label="labelled")
        order = np.argsort(x[on])
        ax.plot(x[on][order], e[on][order], "r-o", label="ground states")
        ax.legend(fontsize=7)
        figs["convex_hull"] = fig

    if history:
        its = [h["iteration"] for h in history]
        fig, ax = new("Acquisitions per iteration", "iteration", "questions asked")
        ax.bar(its, [len(h.get("acquired") or []) for h in history], label="oracle")
        ax.bar(
            its,
            [len(h.get("acquired_cheap") or []) for h in history],
            bottom=[len(h.get("acquired") or []) for h in history],
            label="cheap fidelity",
        )
        ax.legend(fontsize=7)
        figs["acquisitions"] = fig

        div = [(h["iteration"], h["diversity"]) for h in history if h.get("diversity")]
        if div:
            fig, ax = new("Coverage and diversity", "iteration", "coverage of the pool")
            ax.plot([i for i, _ in div], [d["coverage"] for _, d in div], "o-", label="coverage")
            ax2 = ax.twinx()
            ax2.plot(
                [i for i, _ in div],
                [d["kernel_logdet"] for _, d in div],
                "s--",
                color="C1",
                label="kernel log det",
            )
            ax2.set_ylabel("kernel log det of the training set")
            figs["coverage_diversity"] = fig

        fig, ax = new("Oracle cost spent", "iteration", "cost")
        ax.plot(
            its, [h.get("cost_spent") or h["n_oracle_calls"] for h in history], "o-", label="cost"
        )
        ax.plot(its, [h["n_oracle_calls"] for h in history], "s--", label="oracle calls")
        if stopping.get("max_oracle_calls"):
            ax.axhline(stopping["max_oracle_calls"], color="grey", ls=":", label="budget")
        ax.legend(fontsize=7)
        figs["cost"] = fig
    return figs


def _table(rows: list[list], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def write_report(data: CampaignData, out: Path) -> dict:
    """Write PNG plots, ``index.html`` and ``summary.json`` to ``out``; return the summary."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    hull = hull_table(data)  # PhaseDiagram once, for the plot and the summary
    figs = _figures(data, hull)
    images = {}
    for key, fig in figs.items():
        path = out / f"{key}.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        images[key] = base64.b64encode(path.read_bytes()).decode()
    info = summary(data, hull)
    info["plots"] = sorted(f"{k}.png" for k in images)
    (out / "summary.json").write_text(json.dumps(info, indent=1, default=str))

    doc = data.doc
    head_rows = [
        ["state", info["state"]],
        ["iteration", info["iteration"]],
        ["oracle calls", info["n_oracle_calls"]],
        ["cost spent", _fmt(info["cost_spent"])],
        ["candidates", info["n_candidates"]],
        ["failed oracle calls", info["n_failed"]],
        ["stop reason", info["stop_reason"] or "—"],
    ]
    head_rows += [[f"cv {k}", _fmt(v)] for k, v in info["metrics"].items()]
    head_rows += [
        [
            f"ground states ({info.get('hull_method', '')})",
            ", ".join(info.get("ground_states", [])) or "—",
        ]
    ]
    criteria = [
        [c["name"], _fmt(c["value"]), _fmt(c["threshold"]), "yes" if c["met"] else "no", c["kind"]]
        for c in info["criteria"]
    ]
    history = [
        [
            h["iteration"],
            h.get("rule") or "—",
            h["n_oracle_calls"],
            _fmt(h["metrics"].get("rmse")),
            len(h.get("acquired") or []),
            ", ".join((h.get("acquired") or [])[:6]),
            h["decision"].get("reason") or ("stop" if h["decision"]["stop"] else "go on"),
        ]
        for h in doc.get("history") or []
    ]
    acquisitions = sorted(
        data.acquisitions, key=lambda a: (a.get("iteration") or 0, -(a.get("score") or 0))
    )
    acq_rows = [
        [
            a.get("iteration"),
            a["candidate_id"],
            a.get("formula"),
            a.get("rule"),
            _fmt(a.get("score")),
            a["state"],
        ]
        for a in acquisitions
    ]
    figures_html = "".join(
        f'<figure><img alt="{k}" src="data:image/png;base64,{v}"><figcaption>{k}</figcaption>'
        f"</figure>"
        for k, v in images.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>alcampaign report: {html.escape(doc["name"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}figure{{display:inline-block;
margin:0.5em}}img{{max-width:520px}}</style></head><body>
<h1>Campaign {html.escape(doc["name"])}</h1>
{_table(head_rows, ["", ""])}
<h2>Stopping rules</h2>{_table(criteria, ["criterion", "value", "threshold", "met", "kind"])}
<h2>Plots</h2>{figures_html}
<h2>Decisions</h2>{
        _table(
            history,
            ["iteration", "rule", "oracle calls", "cv rmse", "asked", "first ids", "decision"],
        )
    }
<h2>Acquisitions</h2>{
        _table(acq_rows, ["iteration", "candidate", "formula", "rule", "score", "state"])
    }
</body></html>"""
    (out / "index.html").write_text(page)
    return info
