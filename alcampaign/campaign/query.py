"""Candidates read back with their energies (``alcampaign query``).

Each row keeps every energy in its own column, never one standing in for another
(eV/atom; ``None`` where a candidate has none):

* ``label_energy_per_atom``: the oracle's answer at the campaign's fidelity;
* ``chgnet_energy_per_atom``: the CHGNet prescreen;
* ``predicted_energy_per_atom``, ``predicted_std``: the latest model's prediction of
  the oracle and its standard deviation (epistemic and aleatoric), from the surrogate's
  own ``from_dict(...).predict`` (:mod:`alcampaign.campaign.predictions`);
* ``p_ground_state``, ``hull_distance``: the probability that the candidate is a
  convex-hull ground state and its posterior mean distance above the hull (eV/atom),
  from the latest decision's sampled hulls (campaigns with ``acquisition.rule:
  ground_state`` or ``stopping.missing_ground_states``).

:func:`candidate_row` is the one place where a row's fields are assembled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alcampaign.campaign.predictions import predict_candidates
from alcampaign.config import ConfigError
from alcampaign.store.facade import CANDIDATE_STATES, CampaignStores

# The energy columns a query can filter (--emin/--emax) and sort by.
ENERGY_COLUMNS = {
    "label": "label_energy_per_atom",
    "chgnet": "chgnet_energy_per_atom",
    "predicted": "predicted_energy_per_atom",
}
COLUMNS = (
    "candidate_id",
    "formula",
    "n_sites",
    "state",
    "iteration",
    "label_energy_per_atom",
    "chgnet_energy_per_atom",
    "predicted_energy_per_atom",
    "predicted_std",
    "p_ground_state",
    "hull_distance",
)
FORMATS = ("table", "json", "csv")


@dataclass
class QueryFilter:
    """What ``alcampaign query`` selects.

    Attributes
    ----------
    formula
        Reduced formula, e.g. ``CuAu``.
    state
        A candidate state (:data:`~alcampaign.store.facade.CANDIDATE_STATES`).
    iteration
        Acquired in this iteration.
    emin, emax
        Bounds (eV/atom) on the ``energy`` column; rows without that energy drop out
        when a bound is given.
    energy
        ``label``, ``chgnet`` or ``predicted``: the column ``emin``/``emax`` bound and
        rows are sorted by (ascending, rows without it last, ties by id).
    """

    formula: str | None = None
    state: str | None = None
    iteration: int | None = None
    emin: float | None = None
    emax: float | None = None
    energy: str = "label"

    def check(self) -> None:
        """Raise ConfigError naming the option that is wrong."""
        if self.state is not None and self.state not in CANDIDATE_STATES:
            choices = ", ".join(CANDIDATE_STATES)
            raise ConfigError(f"--state {self.state!r}: choose one of {choices}")
        if self.energy not in ENERGY_COLUMNS:
            choices = ", ".join(ENERGY_COLUMNS)
            raise ConfigError(f"--energy {self.energy!r}: choose one of {choices}")
        if self.emin is not None and self.emax is not None and self.emin > self.emax:
            raise ConfigError(f"--emin {self.emin} is above --emax {self.emax}")

    def criteria(self) -> dict:
        """The candidates query of the formula, state and iteration filters."""
        out: dict = {}
        if self.formula:
            out["formula"] = self.formula
        if self.state:
            out["state"] = self.state
        if self.iteration is not None:
            out["acquisition.iteration"] = self.iteration
        return out

    def keeps(self, row: dict) -> bool:
        """Whether a row passes the energy bounds."""
        if self.emin is None and self.emax is None:
            return True
        e = row[ENERGY_COLUMNS[self.energy]]
        if e is None:
            return False
        return (self.emin is None or e >= self.emin) and (self.emax is None or e <= self.emax)


@dataclass
class QueryResult:
    """Rows (sorted, every match), and the iteration of the model that predicted them."""

    rows: list[dict]
    model_iteration: int | None


def read_ground_states(stores: CampaignStores, name: str) -> dict[str, tuple]:
    """The latest ``(p_ground_state, hull_distance)`` of every candidate, from the block
    the controller writes each iteration (empty when the campaign samples no hulls)."""
    if not stores.block_ids(name, "ground_states"):
        return {}
    ids, values, columns = stores.read_block(name, "ground_states")
    p, d = columns.index("p_ground_state"), columns.index("hull_distance")
    return {
        cid: (None if np.isnan(v[p]) else float(v[p]), None if np.isnan(v[d]) else float(v[d]))
        for cid, v in zip(ids, values, strict=True)
    }


def candidate_row(
    candidate: dict,
    label: dict | None,
    prediction: tuple[float, float] | None,
    hull: tuple | None = None,
) -> dict:
    """One query row (the :data:`COLUMNS`) of a candidate document (``formula``,
    ``n_sites``, ``state``, ``acquisition``, ``prescreen.energy_per_atom``), its label
    at the campaign's fidelity, the model's ``(mean, std)`` there and the sampled
    hulls' ``(p_ground_state, hull_distance)``."""
    mean, std = prediction if prediction is not None else (None, None)
    p_ground_state, hull_distance = hull if hull is not None else (None, None)
    return {
        "candidate_id": candidate["candidate_id"],
        "formula": candidate.get("formula"),
        "n_sites": candidate.get("n_sites"),
        "state": candidate.get("state"),
        "iteration": (candidate.get("acquisition") or {}).get("iteration"),
        "label_energy_per_atom": (label or {}).get("energy_per_atom"),
        "chgnet_energy_per_atom": (candidate.get("prescreen") or {}).get("energy_per_atom"),
        "predicted_energy_per_atom": mean,
        "predicted_std": std,
        "p_ground_state": p_ground_state,
        "hull_distance": hull_distance,
    }


def query_candidates(stores: CampaignStores, name: str, filters: QueryFilter) -> QueryResult:
    """Every candidate of a campaign that passes ``filters``, as rows, sorted.

    Raises
    ------
    CampaignNotFound
        No campaign of that name.
    ConfigError
        A bad filter.
    """
    filters.check()
    doc = stores.require_campaign(name, ["name", "config.oracle.fidelity"])
    fidelity = doc["config"]["oracle"]["fidelity"]
    cands = stores.candidate_table(
        name,
        ["formula", "n_sites", "state", "acquisition", "prescreen.energy_per_atom"],
        filters.criteria(),
    )
    labels = {
        lab["candidate_id"]: lab
        for lab in stores.get_labels(name, fidelity, ["energy_per_atom", "status"])
    }
    predicted = predict_candidates(stores, name)
    by_id = predicted.by_id() if predicted is not None else {}
    hulls = read_ground_states(stores, name)
    rows = [
        candidate_row(
            c,
            labels.get(c["candidate_id"]),
            by_id.get(c["candidate_id"]),
            hulls.get(c["candidate_id"]),
        )
        for c in cands
    ]
    rows = [r for r in rows if filters.keeps(r)]
    column = ENERGY_COLUMNS[filters.energy]
    rows.sort(key=lambda r: (r[column] is None, r[column] or 0.0, r["candidate_id"]))
    return QueryResult(rows, None if predicted is None else predicted.iteration)
