"""A server-side, in-memory cache of each campaign's candidate table (for the dashboard).

The embedded store (montydb) decodes every document of a collection on every query and
has no indexes, so a page read straight from the candidates collection costs seconds at
10,000 candidates and about a minute at 100,000. The dashboard's table needs only a
few small fields per candidate, so the server keeps them in memory, per campaign, and
serves pages, search, state filter and sort from numpy arrays:

* a **snapshot** of the fields that only enumeration and prescreen write
  (``candidate_id``, ``formula``, ``n_sites``, ``prescreen.energy_per_atom``, and the
  mirrored ``state``/``acquisition`` as a fallback), read with ONE projected query of
  the candidates collection. It is rebuilt only when its key changes: the campaign
  document's ``created_at``/``enumeration``/``prescreen`` and the signature of the
  campaign's ``blocks`` (every insert of candidates appends block chunks after the
  candidates). Without a ``blocks`` store the key also holds ``updated_at``.
* an **overlay** of what changes while a campaign runs, computed from the truth rather
  than from the candidates' mirror (which the launch job writes later, in bulk, with no
  campaign update after it): a candidate with a label at the campaign's fidelity is
  ``labelled``/``failed``, one with a recorded question (the campaign document's
  ``acquisitions``) is ``acquired``/``requested``, any other keeps its mirrored state.
  The labels and the campaign document are small; they are read on every request and
  the overlay is recomputed when the labels or the questions change.
* the latest surrogate's predicted energy and sigma for the whole campaign
  (:func:`alcampaign.campaign.predictions.predict_candidates`: the surrogate's own
  ``from_dict(...).predict`` at the design rows), recomputed when a new model is stored.

Entries are kept for the ``capacity`` most recently used campaigns (LRU). One lock per
campaign serialises building, so concurrent requests of a served app build a table
once; nothing is ever written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alcampaign.campaign.predictions import latest_model, predict_candidates
from alcampaign.store.facade import CampaignStores, answered_state, question_state

SORT_KEYS = ("candidate_id", "formula", "n_sites", "state", "chgnet_energy")
SNAPSHOT_FIELDS = [
    "candidate_id",
    "formula",
    "n_sites",
    "state",
    "acquisition",
    "prescreen.energy_per_atom",
]


def _numbers(values: list) -> tuple[np.ndarray, np.ndarray]:
    """Floats (NaN where missing) and a has-value mask."""
    have = np.array([isinstance(v, int | float) and not isinstance(v, bool) for v in values])
    out = np.full(len(values), np.nan)
    if have.any():
        out[have] = [float(v) for v, h in zip(values, have, strict=True) if h]
    return out, have


@dataclass
class Snapshot:
    """The enumeration/prescreen fields of every candidate, sorted by id."""

    ids: np.ndarray  # str, sorted
    pos: dict[str, int]
    formula_codes: np.ndarray  # index into formulas (sorted); -1: no formula
    formulas: list[str]
    n_sites: np.ndarray
    n_sites_have: np.ndarray
    energy: np.ndarray  # CHGNet eV/atom, NaN where missing
    energy_have: np.ndarray
    mirror_state: list[str | None]
    mirror_acquisition: dict[int, dict]
    orders: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_docs(cls, docs: list[dict]) -> Snapshot:
        docs = sorted(docs, key=lambda d: d["candidate_id"])
        ids = np.array([d["candidate_id"] for d in docs], dtype=str)
        formula = [d.get("formula") for d in docs]
        formulas = sorted({f for f in formula if isinstance(f, str)})
        code = {f: i for i, f in enumerate(formulas)}
        n_sites, n_have = _numbers([d.get("n_sites") for d in docs])
        energy, e_have = _numbers([(d.get("prescreen") or {}).get("energy_per_atom") for d in docs])
        return cls(
            ids=ids,
            pos={cid: i for i, cid in enumerate(ids.tolist())},
            formula_codes=np.array([code.get(f, -1) for f in formula], dtype=np.int64),
            formulas=formulas,
            n_sites=n_sites,
            n_sites_have=n_have,
            energy=energy,
            energy_have=e_have,
            mirror_state=[d.get("state") for d in docs],
            mirror_acquisition={
                i: d["acquisition"] for i, d in enumerate(docs) if d.get("acquisition")
            },
        )

    @classmethod
    def from_blocks(
        cls,
        ids: list[str],
        composition: np.ndarray,
        elements: list[str],
        energy: dict[str, float] | None,
    ) -> Snapshot:
        """From the features/composition blocks (ids, formula and atoms per cell) and
        the prescreen energy block; every state ``pool`` until the overlay says more."""
        from pymatgen.core import Composition

        rows, inverse = np.unique(composition, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        unique = [
            Composition({el: amt for el, amt in zip(elements, row, strict=True) if amt})
            for row in rows
        ]
        formula = [c.reduced_formula for c in unique]
        formulas = sorted(set(formula))
        code = np.array([formulas.index(f) for f in formula], dtype=np.int64)
        n = len(ids)
        e = np.full(n, np.nan)
        if energy:
            e = np.array([energy.get(cid, np.nan) for cid in ids], dtype=float)
        return cls(
            ids=np.array(ids, dtype=str),
            pos={cid: i for i, cid in enumerate(ids)},
            formula_codes=code[inverse] if n else np.zeros(0, dtype=np.int64),
            formulas=formulas,
            n_sites=composition.sum(axis=1) if n else np.zeros(0),
            n_sites_have=np.ones(n, dtype=bool),
            energy=e,
            energy_have=~np.isnan(e),
            mirror_state=["pool"] * n,
            mirror_acquisition={},
        )

    def order(self, key: str) -> np.ndarray:
        """Row positions in the order of a static sort (ties by id, missing first)."""
        if key not in self.orders:
            idx = np.arange(len(self.ids))
            if key == "candidate_id":
                order = idx
            elif key == "formula":
                order = np.lexsort((idx, self.formula_codes))
            elif key == "n_sites":
                order = np.lexsort((idx, np.nan_to_num(self.n_sites), self.n_sites_have))
            elif key == "chgnet_energy":
                order = np.lexsort((idx, np.nan_to_num(self.energy), self.energy_have))
            else:
                raise KeyError(key)
            self.orders[key] = order
        return self.orders[key]


@dataclass
class Overlay:
    """States, acquisitions and labels as the labels and questions say (the truth)."""

    states: list[str]  # sorted names present
    state_codes: np.ndarray  # index into states; -1: no state
    acquisition: dict[int, dict]
    labels: dict[str, dict]
    state_order: np.ndarray


@dataclass
class Entry:
    """One campaign's cached table."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    snapshot_key: Any = None
    snapshot: Snapshot | None = None
    overlay_key: Any = None
    overlay: Overlay | None = None
    model_key: Any = None
    prediction: tuple[np.ndarray, np.ndarray] | None = None
    model_iteration: int | None = None


@dataclass
class Page:
    """One page of the table."""

    total: int
    rows: list[dict]
    model_iteration: int | None


class CandidateTableCache:
    """Per-campaign candidate tables in memory (see the module docstring).

    Parameters
    ----------
    capacity
        Campaigns kept (least recently used ones are dropped).
    """

    def __init__(self, capacity: int = 4) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity}: keep at least one campaign")
        self.capacity = capacity
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # snapshot builds (for tests and benchmarks)

    def _entry(self, name: str) -> Entry:
        with self._lock:
            entry = self._entries.pop(name, None) or Entry()
            self._entries[name] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return entry

    def page(
        self,
        stores: CampaignStores,
        doc: dict,
        *,
        page: int,
        per_page: int,
        search: str | None,
        state: str | None,
        sort: str,
        check_page: Callable[[int], None],
    ) -> Page:
        """One page of rows.

        Parameters
        ----------
        doc
            The campaign document with ``name``, ``created_at``, ``updated_at``,
            ``enumeration``, ``prescreen``, ``acquisitions`` and
            ``config.oracle.fidelity``.
        check_page
            Called with the number of matching rows before the page is cut (raises
            for a page past the end).
        """
        name = doc["name"]
        fidelity = doc["config"]["oracle"]["fidelity"]
        entry = self._entry(name)
        # Small reads first, outside the entry lock: the keys must not be newer than
        # what is built with them (every write is followed by a change of a key).
        blocks = _block_signature(stores, name)
        snap_key = (
            doc.get("created_at"),
            repr(doc.get("enumeration")),
            repr(doc.get("prescreen")),
            repr(blocks) if blocks is not None else doc.get("updated_at"),
        )
        labels = stores.labels.query(
            {"campaign": name, "fidelity": fidelity},
            ["candidate_id", "energy_per_atom", "status"],
        )
        acquisitions = [a for a in doc.get("acquisitions") or [] if not a.get("cheap")]
        its = stores.models.query({"campaign": name}, ["iteration"])
        model_it = max((d["iteration"] for d in its), default=None)
        with entry.lock:
            if entry.snapshot is None or entry.snapshot_key != snap_key:
                entry.snapshot = _blocks_snapshot(stores, doc, blocks) or Snapshot.from_docs(
                    stores.candidates.query({"campaign": name}, SNAPSHOT_FIELDS)
                )
                entry.snapshot_key = snap_key
                entry.overlay = None
                entry.prediction, entry.model_key = None, None
                self.builds += 1
            snap = entry.snapshot
            over_key = (len(labels), len(acquisitions), _label_digest(labels))
            if entry.overlay is None or entry.overlay_key != over_key:
                entry.overlay = _overlay(snap, labels, acquisitions)
                entry.overlay_key = over_key
            over = entry.overlay
            if model_it is None:
                entry.prediction, entry.model_key = None, None
            elif entry.model_key != model_it:
                head = latest_model(stores, name)
                entry.prediction = self._predict(stores, name, snap, head)
                entry.model_key = model_it
                entry.model_iteration = None if head is None else head["iteration"]
            pred = entry.prediction
            order = over.state_order if sort == "state" else snap.order(sort)
            mask = self._mask(snap, over, search, state)
            selected = order if mask is None else order[mask[order]]
            check_page(len(selected))
            chosen = selected[(page - 1) * per_page : page * per_page]
            rows = [self._row(snap, over, pred, int(i), fidelity) for i in chosen]
            model_iteration = None if model_it is None else entry.model_iteration
        return Page(total=len(selected), rows=rows, model_iteration=model_iteration)

    # -- parts ---------------------------------------------------------------------

    @staticmethod
    def _mask(snap: Snapshot, over: Overlay, search: str | None, state: str | None):
        mask = None
        if state is not None:
            code = over.states.index(state) if state in over.states else -2
            mask = over.state_codes == code
        if search:
            text = search.strip()
            hit = np.array([text in f for f in snap.formulas] + [False], dtype=bool)
            found = hit[snap.formula_codes] | np.char.startswith(snap.ids, text)
            mask = found if mask is None else mask & found
        return mask

    @staticmethod
    def _predict(stores, name, snap, model):
        """Mean and sigma of every candidate (NaN where it has no features row)."""
        pred = None if model is None else predict_candidates(stores, name, model)
        if pred is None:
            return None
        mean = np.full(len(snap.ids), np.nan)
        std = np.full(len(snap.ids), np.nan)
        rows = np.array([snap.pos.get(cid, -1) for cid in pred.ids], dtype=int)
        keep = rows >= 0
        mean[rows[keep]], std[rows[keep]] = pred.mean[keep], pred.std[keep]
        return mean, std

    @staticmethod
    def _row(snap: Snapshot, over: Overlay, pred, i: int, fidelity: str) -> dict:
        cid = str(snap.ids[i])
        lab = over.labels.get(cid) or {}
        chgnet = float(snap.energy[i]) if snap.energy_have[i] else None
        if lab.get("energy_per_atom") is not None:
            energy, source = lab["energy_per_atom"], fidelity
        else:
            energy, source = chgnet, ("chgnet" if chgnet is not None else None)
        acq = over.acquisition.get(i) or {}
        code = snap.formula_codes[i]
        n_sites = snap.n_sites[i]
        return {
            "candidate_id": cid,
            "formula": snap.formulas[code] if code >= 0 else None,
            "n_sites": (int(n_sites) if n_sites == int(n_sites) else float(n_sites))
            if snap.n_sites_have[i]
            else None,
            "state": over.states[over.state_codes[i]] if over.state_codes[i] >= 0 else None,
            "energy_per_atom": energy,
            "energy_source": source,
            "chgnet_energy": chgnet,
            "label_status": lab.get("status"),
            "predicted": None if pred is None else float(pred[0][i]),
            "sigma": None if pred is None else float(pred[1][i]),
            "iteration": acq.get("iteration"),
            "rule": acq.get("rule"),
            "score": acq.get("score"),
            "relaxed": lab.get("status") == "success",
        }


def _blocks_snapshot(stores: CampaignStores, doc: dict, blocks: list | None) -> Snapshot | None:
    """The snapshot from blocks alone (tenths of a second at 100,000 candidates,
    against a minute for a scan of the candidates on the embedded store), or ``None``
    where the blocks cannot stand in for the candidates: no ``blocks`` store, a
    campaign without recorded questions (its states live only in the candidates), a
    composition block with fewer rows than the features block, or a prescreen whose energies
    have no block (stored by an older version)."""
    if blocks is None or "acquisitions" not in doc:
        return None
    rows: dict[str, int] = {}
    for kind, _, shape, _ in blocks:
        rows[kind] = rows.get(kind, 0) + shape[0]
    if not rows.get("features") or rows.get("composition") != rows["features"]:
        return None
    ids, comp, elements = stores.read_block(doc["name"], "composition")
    energy = None
    if "prescreen_energy" in rows:
        e_ids, e, _ = stores.read_block(doc["name"], "prescreen_energy")
        energy = dict(zip(e_ids, e[:, 0].tolist(), strict=True))
    elif doc.get("prescreen") and (doc["prescreen"].get("energy_min") is not None):
        return None
    return Snapshot.from_blocks(ids, comp, elements or [], energy)


def _block_signature(stores: CampaignStores, name: str) -> list | None:
    """``(kind, chunk, shape, time)`` of every block chunk of a campaign (chunks are
    only ever appended, after the candidates they hold), ``None`` without blocks."""
    if stores.blocks is None:
        return None
    docs = stores.blocks.query({"campaign": name}, ["kind", "chunk", "shape", "time"])
    return sorted((d["kind"], d["chunk"], tuple(d["shape"]), d.get("time")) for d in docs)


def _label_digest(labels: list[dict]) -> int:
    """Changes when a label is added or its status changes (labels are never edited
    in place, but a replaced label must not be missed)."""
    return hash(tuple(sorted((lab["candidate_id"], lab.get("status")) for lab in labels)))


def _overlay(snap: Snapshot, labels: list[dict], acquisitions: list[dict]) -> Overlay:
    state = list(snap.mirror_state)
    acquisition = dict(snap.mirror_acquisition)
    for a in acquisitions:  # in the order asked: the last question wins
        i = snap.pos.get(a["candidate_id"])
        if i is not None:
            state[i] = question_state(a)
            acquisition[i] = {k: a.get(k) for k in ("iteration", "rule", "score", "time")}
    by_id = {}
    for lab in labels:
        by_id[lab["candidate_id"]] = lab
        i = snap.pos.get(lab["candidate_id"])
        if i is not None:
            state[i] = answered_state(lab.get("status"))
    states = sorted({s for s in state if isinstance(s, str)})
    code = {s: k for k, s in enumerate(states)}
    codes = np.array([code.get(s, -1) for s in state], dtype=np.int64)
    order = np.lexsort((np.arange(len(codes)), codes))
    return Overlay(states, codes, acquisition, by_id, order)
