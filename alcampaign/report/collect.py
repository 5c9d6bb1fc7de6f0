"""What a report shows, read from the stores once, and the numbers computed from it.

:func:`collect` reads a campaign's history, latest model (with its out-of-fold
predictions), labels, compositions and acquisitions through
:class:`~alcampaign.store.facade.CampaignStores`, plus the latest model's prediction for
every candidate without a label (:func:`pool_predictions`). It only reads: blocks that
are missing are taken from the candidates, never rebuilt, so it also works on the
dashboard's read-only views.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from alcampaign.campaign.predictions import predict_candidates
from alcampaign.campaign.query import read_ground_states
from alcampaign.science.calibration import expected_calibration_error
from alcampaign.science.hull import hull_energies

LEVELS = np.arange(0.05, 1.0, 0.1)
ON_HULL = 1e-6  # eV/atom: a labelled energy this close to the hull is a ground state


@dataclass
class PoolPredictions:
    """The latest model's predictive distribution at the candidates without a label.

    Attributes
    ----------
    ids
        Candidate ids.
    elements
        Column names of ``amounts``.
    amounts
        Atoms of each element per cell, ``(n, len(elements))``.
    mean, std
        Predictive mean and standard deviation (epistemic and aleatoric) of the
        oracle's energy per atom, eV/atom.
    iteration
        The model's iteration.
    """

    ids: list[str]
    elements: list[str]
    amounts: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    iteration: int | None = None


@dataclass
class CampaignData:
    """Everything a report shows, read from the stores once."""

    doc: dict
    model: dict | None
    labels: list[dict]
    compositions: dict[str, dict[str, float]]
    acquisitions: list[dict]
    baseline: dict | None = None
    pool: PoolPredictions | None = None
    ground_states: dict[str, tuple] | None = None


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
    model = stores.latest_model(name)
    labelled = {lab["candidate_id"] for lab in labels if lab["status"] == "success"}
    return CampaignData(
        doc=doc,
        model=model,
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
        pool=pool_predictions(stores, name, model, exclude=labelled),
        ground_states=read_ground_states(stores, name) or None,
    )


# -- predictions at the unlabelled candidates ---------------------------------------


def _compositions(stores, name: str) -> tuple[list[str], np.ndarray, list[str]]:
    """Ids, amounts per element and the element names of every candidate: the
    composition block where one is stored, else the candidates (nothing is written,
    unlike :meth:`CampaignStores.read_block`, which rebuilds a missing block)."""
    blocks = getattr(stores, "blocks", None)
    if blocks is not None and blocks.count({"campaign": name, "kind": "composition"}):
        ids, amounts, elements = stores.read_block(name, "composition")
        return ids, amounts, list(elements or [])
    docs = [
        (d["candidate_id"], d["composition"])
        for d in stores.candidate_table(name, ["composition"])
        if d.get("composition")
    ]
    elements = sorted({el for _, c in docs for el in c})
    amounts = np.array([[c.get(el, 0.0) for el in elements] for _, c in docs], dtype=float)
    return [cid for cid, _ in docs], amounts.reshape(len(docs), len(elements)), elements


def pool_predictions(
    stores, name: str, model: dict | None, exclude: set[str] = frozenset()
) -> PoolPredictions | None:
    """The latest model's prediction (mean and total std, eV/atom; the one path of
    :func:`alcampaign.campaign.predictions.predict_candidates`, as ``query`` and the
    dashboard's table show them) for every candidate not in ``exclude`` that has
    features and a composition; ``None`` without a model or without such candidates."""
    if not model:
        return None
    pred = predict_candidates(stores, name, model)
    if pred is None:
        return None
    comp_ids, amounts, elements = _compositions(stores, name)
    comp_row = {cid: i for i, cid in enumerate(comp_ids)}
    keep = [i for i, cid in enumerate(pred.ids) if cid not in exclude and cid in comp_row]
    if not keep:
        return None
    return PoolPredictions(
        ids=[pred.ids[i] for i in keep],
        elements=elements,
        amounts=amounts[[comp_row[pred.ids[i]] for i in keep]],
        mean=pred.mean[keep],
        std=pred.std[keep],
        iteration=pred.iteration,
    )


# -- numbers -------------------------------------------------------------------------


def calibration_curve(y, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Nominal and observed coverage of central predictive intervals."""
    z = np.abs(np.asarray(y) - np.asarray(mean)) / np.asarray(std)
    observed = np.array([(z <= norm.ppf(0.5 + 0.5 * p)).mean() for p in LEVELS])
    return LEVELS, observed


def _fractions(amounts: np.ndarray) -> np.ndarray:
    return amounts / amounts.sum(axis=1, keepdims=True)


def _reference(comps: list[dict], energies: np.ndarray):
    """Formation-energy reference of the labelled set: ``(ref, above, method)`` where
    ``ref(elements, fractions)`` is the reference energy per atom of any composition
    and ``above`` the labelled energies above their hull.

    With a labelled entry of every element, pymatgen's ``PhaseDiagram`` (elemental
    references); otherwise (a pseudo-binary such as Li_x CoO2) the line through the
    labelled compositions at the two ends of the most varying element's fraction, and
    the lower hull of the labelled compositions
    (:func:`alcampaign.science.hull.hull_energies`).
    """
    elements = sorted({el for c in comps for el in c})
    amounts = np.array([[c.get(el, 0.0) for el in elements] for c in comps])
    fractions = _fractions(amounts)
    try:
        from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
        from pymatgen.core import Composition, Element

        entries = [
            PDEntry(Composition(c), e * sum(c.values()))
            for c, e in zip(comps, energies, strict=True)
        ]
        pd = PhaseDiagram(entries)
        above = np.array([pd.get_e_above_hull(en) for en in entries])
        mu = {el: pd.el_refs[Element(el)].energy_per_atom for el in elements}

        def ref(els: list[str], frac: np.ndarray) -> np.ndarray:
            return frac @ np.array([mu.get(el, np.nan) for el in els])

        return ref, above, "pymatgen PhaseDiagram"
    except Exception:  # no elemental references
        above = energies - hull_energies(fractions, energies)
        j = int(np.argmax(np.ptp(fractions, axis=0)))
        lo, hi = np.argmin(fractions[:, j]), np.argmax(fractions[:, j])
        slope = (energies[hi] - energies[lo]) / max(fractions[hi, j] - fractions[lo, j], 1e-12)
        el_j, x_lo, e_lo = elements[j], fractions[lo, j], energies[lo]

        def ref(els: list[str], frac: np.ndarray) -> np.ndarray:
            xj = frac[:, els.index(el_j)] if el_j in els else np.zeros(len(frac))
            return e_lo + slope * (xj - x_lo)

        return ref, above, "lower hull of the labelled compositions"


def hull_table(data: CampaignData) -> dict | None:
    """Labelled formation energies, their distance to the convex hull, the ground
    states, and (``predicted``) the latest model's formation energies with their
    predictive std at the unlabelled candidates, on the same reference.

    ``None`` below two successful labels. ``predicted`` is ``None`` without a model;
    its ``e_above_hull`` is the predicted distance to the labelled hull along ``x``.
    ``p_on_hull`` (labelled and predicted) is each candidate's probability of being a
    hull ground state from the latest sampled hulls (``ground_state`` rule or
    ``missing_ground_states`` stopping; ``None`` where the campaign samples no hulls).
    """
    good = [lab for lab in data.labels if lab["status"] == "success"]
    if len(good) < 2:
        return None
    comps = [data.compositions[lab["candidate_id"]] for lab in good]
    energies = np.array([lab["energy_per_atom"] for lab in good])
    ref, above, method = _reference(comps, energies)
    elements = sorted({el for c in comps for el in c})
    fractions = _fractions(np.array([[c.get(el, 0.0) for el in elements] for c in comps]))
    formation = energies - ref(elements, fractions)
    axis = int(np.argmax(np.ptp(fractions, axis=0)))
    x = fractions[:, axis]
    on_hull = above < ON_HULL
    out = {
        "method": method,
        "x_element": elements[axis],
        "ids": [lab["candidate_id"] for lab in good],
        "x": x.tolist(),
        "formation_energy": formation.tolist(),
        "e_above_hull": above.tolist(),
        "ground_states": [good[i]["candidate_id"] for i in np.flatnonzero(on_hull)],
        "p_on_hull": _p_on_hull(data, [lab["candidate_id"] for lab in good]),
        "predicted": None,
    }
    if data.pool is not None:
        out["predicted"] = _predicted_hull(data.pool, elements[axis], ref, x, formation, on_hull)
        out["predicted"]["p_on_hull"] = _p_on_hull(data, data.pool.ids)
    return out


def _p_on_hull(data: CampaignData, ids: list[str]) -> list[float | None] | None:
    """The stored P(on hull) of each candidate (``None`` where absent; ``None`` for
    all when the campaign samples no hulls)."""
    if not data.ground_states:
        return None
    return [(data.ground_states.get(cid) or (None, None))[0] for cid in ids]


def _predicted_hull(pool: PoolPredictions, x_element, ref, x, formation, on_hull) -> dict:
    frac = _fractions(pool.amounts)
    px = frac[:, pool.elements.index(x_element)] if x_element in pool.elements else 0 * pool.mean
    pform = pool.mean - ref(pool.elements, frac)
    order = np.argsort(x[on_hull])
    hull_line = np.interp(px, x[on_hull][order], formation[on_hull][order])
    return {
        "ids": pool.ids,
        "x": px.tolist(),
        "formation_energy": pform.tolist(),
        "std": pool.std.tolist(),
        "e_above_hull": (pform - hull_line).tolist(),
        "model_iteration": pool.iteration,
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
        out["cv_ece_recomputed"] = expected_calibration_error(
            cv_targets(data), np.array(cv["mean"]), np.array(cv["std"])
        )
    if hull:
        out["ground_states"] = hull["ground_states"]
        out["hull_method"] = hull["method"]
        pred = hull.get("predicted")
        if pred:
            out["n_predicted"] = len(pred["ids"])
            if pred["ids"]:
                i = int(np.argmin(pred["e_above_hull"]))
                out["closest_predicted_to_hull"] = {
                    "candidate_id": pred["ids"][i],
                    "e_above_hull": pred["e_above_hull"][i],
                    "std": pred["std"][i],
                }
            p = pred.get("p_on_hull")
            if p and any(v is not None for v in p):
                j = int(np.argmax([-1.0 if v is None else v for v in p]))
                out["most_probable_unlabelled_ground_state"] = {
                    "candidate_id": pred["ids"][j],
                    "p_on_hull": p[j],
                }
    return out


def cv_targets(data: CampaignData) -> np.ndarray:
    """The oracle labels of the latest model's training set, in its order."""
    energy = {lab["candidate_id"]: lab["energy_per_atom"] for lab in data.labels}
    return np.array([energy[cid] for cid in data.model["training_ids"]])
