"""The one module that reads and writes the campaign collections.

The collections (``candidates``, ``labels``, ``models``, ``campaigns`` and the optional
``blocks``) are maggma stores, reached as ``additional_stores`` of the jobflow
``JobStore`` that runs the campaign's jobs.

Layout for speed (the embedded MontyStore has no indexes and decodes every document of
a collection on each query or update, so anything that touches the candidates
collection costs O(pool)):

* ``blocks`` holds per-candidate arrays (features, compositions, CHGNet embeddings and
  energies) as a few binary chunks of up to ``BLOCK_ROWS`` rows, written whenever
  candidates are inserted or screened. The controller reads them instead of the candidates.
* The campaign document's ``acquisitions`` list (every question ever asked) and the
  labels are the truth about which candidates are open, answered or free; the
  candidates' ``state`` and ``acquisition`` fields mirror them for people and queries,
  written in bulk off the decision path (:meth:`CampaignStores.mirror_acquisitions`).

Writes are bulk where the backend allows (``insert_many``; ``bulk_write`` on MongoDB
and mongomock, an ``update_one`` loop on montydb, which has no ``bulk_write``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from bson import Binary
from monty.json import jsanitize

from alcampaign.config import ConfigError, embedded_store_spec, read_store_spec, validate_store_spec
from alcampaign.errors import CampaignNotFound

CANDIDATE_STATES = ("pool", "acquired", "requested", "labelled", "failed")


def question_state(entry: dict) -> str:
    """A candidate's state while an acquisition entry's question is open."""
    return "requested" if entry.get("external") else "acquired"


def answered_state(status: str | None) -> str:
    """A candidate's state once its label has this status."""
    return "labelled" if status == "success" else "failed"


BLOCK_ROWS = 5000
# Serialises lease changes within a process: MongoDB's find_one_and_update is atomic
# across processes, mongomock's and montydb's are not even across threads (the embedded
# store adds a file lock across processes: CampaignStores.lease_mutex).
_LEASE_LOCK = threading.Lock()
# Block kinds and the candidate field each mirrors (used to rebuild a missing block).
BLOCK_FIELDS = {
    "features": "features",
    "embedding": "prescreen.embedding",
    "composition": "composition",
    "prescreen_energy": "prescreen.energy_per_atom",
}


def now() -> str:
    """UTC timestamp in ISO format."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def label_document(
    campaign: str,
    candidate_id: str,
    fidelity: str,
    *,
    oracle: dict,
    cost: float,
    iteration: int | None,
    energy_per_atom: float | None = None,
    structure=None,
    forces=None,
    stress=None,
    job_uuid: str | None = None,
    error: str | None = None,
) -> dict:
    """A ``labels`` document: ``success`` with an energy and a final structure, else
    ``failed`` with the error."""
    doc = {
        "campaign": campaign,
        "candidate_id": candidate_id,
        "fidelity": fidelity,
        "oracle": oracle,
        "job_uuid": job_uuid,
        "cost": cost,
        "iteration": iteration,
        "time": now(),
    }
    if energy_per_atom is None:
        doc.update(status="failed", energy_per_atom=None, error=error or "no energy")
    else:
        doc.update(
            status="success",
            energy_per_atom=float(energy_per_atom),
            energy=float(energy_per_atom) * len(structure),
            forces=forces,
            stress=stress,
            final_structure=structure.as_dict(),
        )
    return doc


def acquisition_entry(
    candidate_id: str,
    fidelity: str,
    iteration: int,
    rule: str,
    score: float,
    cheap: bool = False,
    external: bool = False,
) -> dict:
    """One question in the campaign document's ``acquisitions``.

    ``cheap`` marks the cheap fidelity of a multi-fidelity campaign; ``external`` an
    oracle outside the workflow (its candidate becomes ``requested``).
    """
    return {
        "candidate_id": candidate_id,
        "fidelity": fidelity,
        "cheap": cheap,
        "external": external,
        "iteration": iteration,
        "rule": rule,
        "score": float(score),
        "time": now(),
    }


def job_store_from_spec(spec: dict):
    """Build a jobflow ``JobStore`` from a validated spec dict."""
    from jobflow import JobStore

    validate_store_spec(spec, "(spec)")
    try:
        return JobStore.from_dict_spec(spec)
    except Exception as exc:
        raise ConfigError(f"could not build the job store: {exc}") from None


def load_job_store(path: str | Path | None = None):
    """The ``JobStore`` of a store YAML file, or the embedded default when ``None``."""
    spec = embedded_store_spec() if path is None else read_store_spec(path)
    return job_store_from_spec(spec)


def _connect_mutex(path: str):
    """On the embedded store, a file lock around connecting: montydb writes its storage
    files when a client first opens the folder, and another process opening it at that
    moment read them half-written ("Empty module name"; seen with ``run`` and
    ``resume`` started together on a new database)."""
    from filelock import FileLock

    Path(path).mkdir(parents=True, exist_ok=True)
    return FileLock(str(Path(path) / ".connect.lock"))


#: Attempts to open the embedded database (see :func:`_connect_embedded`).
EMBEDDED_CONNECT_ATTEMPTS = 5


def _connect_embedded(path: str, connect) -> None:
    """Call ``connect()`` under :func:`_connect_mutex`, trying again a few times.

    maggma's ``MontyStore.connect`` rewrites montydb's storage files on *every* connect,
    so a program that opens the folder without our lock (a user's script with plain
    maggma, a second tool) can make a file read empty for a moment. ``connect`` must
    keep what an earlier attempt connected (maggma's stores do). Raises the last error.
    """
    for attempt in range(EMBEDDED_CONNECT_ATTEMPTS):
        try:
            with _connect_mutex(path):
                connect()
            return
        except Exception:
            if attempt + 1 == EMBEDDED_CONNECT_ATTEMPTS:
                raise
            time.sleep(0.05 * 2**attempt)


def connect_job_store(store) -> None:
    """Connect every store of a JobStore and make one round trip, so that an unreachable
    database fails here, with an error that says what to fix, before anything runs.

    The embedded store is opened with :func:`_connect_embedded`.
    """

    def connect() -> None:
        store.connect()
        store.additional_stores["campaigns"].count({"name": "__ping__"})

    path = getattr(store.docs_store, "database_path", None)
    try:
        if path is None:
            connect()
        else:
            _connect_embedded(path, connect)
    except Exception as exc:  # every failure gets a message that says what to check
        if path is not None:
            raise ConfigError(
                f"could not open the embedded database at {path}: {exc}. Check that the "
                "folder is writable, and that no other program is rewriting it."
            ) from None
        raise ConfigError(
            f"could not connect to the database ({type(store.docs_store).__name__}): {exc}. "
            "Check that the server is reachable and the store file's environment "
            "variables are set."
        ) from None


@dataclass
class CampaignStores:
    """Typed access to the campaign collections of one JobStore."""

    candidates: Any
    labels: Any
    models: Any
    campaigns: Any
    blocks: Any = None

    @classmethod
    def from_job_store(cls, store) -> CampaignStores:
        """Take the campaign collections from a connected JobStore's additional stores.

        Without a ``blocks`` store everything works, but the controller reads the
        candidates collection on every decision (slow on the embedded store).
        """
        extra = store.additional_stores
        missing = [c for c in ("candidates", "labels", "models", "campaigns") if c not in extra]
        if missing:
            raise ConfigError(f"the job store lacks the additional store(s) {', '.join(missing)}")
        return cls(
            extra["candidates"],
            extra["labels"],
            extra["models"],
            extra["campaigns"],
            extra.get("blocks"),
        )

    # -- campaigns ---------------------------------------------------------------

    def get_campaign(self, name: str) -> dict | None:
        """The campaign document, or ``None``."""
        return self.campaigns.query_one({"name": name})

    def require_campaign(self, name: str, properties: Sequence[str] | None = None) -> dict:
        """The campaign document (only ``properties``, if given).

        Raises
        ------
        CampaignNotFound
            No campaign of that name in this store.
        """
        doc = self.campaigns.query_one({"name": name}, properties=properties)
        if doc is None:
            raise CampaignNotFound(name)
        return doc

    def list_campaigns(self) -> list[dict]:
        """Every campaign document, newest first, without the history."""
        docs = list(
            self.campaigns.query(
                {},
                properties=[
                    "name",
                    "state",
                    "iteration",
                    "n_oracle_calls",
                    "stop_reason",
                    "updated_at",
                ],
            )
        )
        return sorted(docs, key=lambda d: d.get("updated_at", ""), reverse=True)

    def create_campaign(self, name: str, config: dict, **fields: Any) -> dict:
        """Insert a new campaign document in state ``running`` (with extra fields)."""
        doc = {
            "name": name,
            "config": jsanitize(config),
            "state": "running",
            "iteration": 0,
            "n_oracle_calls": 0,
            "history": [],
            "stop_reason": None,
            "metrics": None,
            "created_at": now(),
            "updated_at": now(),
            **jsanitize(fields),
        }
        self.campaigns._collection.insert_one(dict(doc))
        return doc

    def update_campaign(self, name: str, fields: dict) -> None:
        """Set fields of a campaign document."""
        update = {"$set": {**jsanitize(fields), "updated_at": now()}}
        self.campaigns._collection.update_one({"name": name}, update)

    # -- candidates --------------------------------------------------------------

    def candidate_ids(self, campaign: str) -> set[str]:
        """Ids of every candidate of a campaign."""
        docs = self.candidates.query({"campaign": campaign}, properties=["candidate_id"])
        return {d["candidate_id"] for d in docs}

    def insert_candidates(self, campaign: str, docs: Sequence[dict]) -> int:
        """Insert candidates not stored yet (by id) and their block rows; returns how
        many were new.

        Block rows are written for every given candidate the blocks lack, so a rerun
        after a crash between the two writes completes the blocks.
        """
        existing = self.candidate_ids(campaign)
        new = [jsanitize(d) for d in docs if d["candidate_id"] not in existing]
        if new:
            self.candidates._collection.insert_many(new)
        if docs and "features" in docs[0]:
            ids = [d["candidate_id"] for d in docs]
            self.complete_block(campaign, "features", ids, [d["features"] for d in docs])
            if "composition" in docs[0]:
                self.complete_block(campaign, "composition", ids, *_composition_matrix(docs))
        return len(new)

    def candidate_table(
        self, campaign: str, properties: Sequence[str], criteria: dict | None = None
    ) -> list[dict]:
        """One query: the given fields of the campaign's candidates, sorted by id."""
        query = {"campaign": campaign, **(criteria or {})}
        docs = self.candidates.query(query, properties=["candidate_id", *properties])
        return sorted(docs, key=lambda d: d["candidate_id"])

    def update_candidates(self, campaign: str, updates: dict[str, dict]) -> None:
        """Set per-candidate fields: ``{candidate_id: {field: value}}``."""
        ops = [
            ({"campaign": campaign, "candidate_id": cid}, {"$set": jsanitize(fields)})
            for cid, fields in updates.items()
        ]
        _bulk_update(self.candidates._collection, ops)

    def set_state(self, campaign: str, ids: Iterable[str], state: str, cheap: bool = False) -> None:
        """Move candidates to a state (one ``update_many``); ``cheap``: the cheap fidelity's."""
        if state not in CANDIDATE_STATES:
            raise ValueError(f"unknown candidate state {state!r}")
        ids = list(ids)
        if ids:
            self.candidates._collection.update_many(
                {"campaign": campaign, "candidate_id": {"$in": ids}},
                {"$set": {"cheap_state" if cheap else "state": state}},
            )

    # -- blocks ------------------------------------------------------------------

    def write_block(
        self,
        campaign: str,
        kind: str,
        ids: Sequence[str],
        values: Any,
        columns: Sequence[str] | None = None,
    ) -> None:
        """Append rows (one per candidate id) to a block, in binary chunks."""
        if self.blocks is None or not len(ids):
            return
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != len(ids):
            raise ValueError(f"block {kind!r}: {values.shape} values for {len(ids)} ids")
        first = self.blocks.count({"campaign": campaign, "kind": kind})
        docs = [
            {
                "campaign": campaign,
                "kind": kind,
                "chunk": first + i,
                "ids": list(ids[lo : lo + BLOCK_ROWS]),
                "shape": list(values[lo : lo + BLOCK_ROWS].shape),
                "columns": list(columns) if columns is not None else None,
                "data": Binary(values[lo : lo + BLOCK_ROWS].tobytes()),
                "time": now(),
            }
            for i, lo in enumerate(range(0, len(ids), BLOCK_ROWS))
        ]
        self.blocks._collection.insert_many(docs)

    def complete_block(
        self,
        campaign: str,
        kind: str,
        ids: Sequence[str],
        values: Any,
        columns: Sequence[str] | None = None,
    ) -> None:
        """Append the rows of the ``ids`` a block lacks (all of them the first time), so
        that rerunning a job after a crash between its writes completes the block."""
        if self.blocks is None or not len(ids):
            return
        have = set(self.block_ids(campaign, kind))
        keep = [i for i, cid in enumerate(ids) if cid not in have]
        if keep:
            values = np.asarray(values, dtype=np.float64)[keep]
            self.write_block(campaign, kind, [ids[i] for i in keep], values, columns)

    def block_ids(self, campaign: str, kind: str) -> list[str]:
        """The candidate ids a block holds rows for."""
        if self.blocks is None:
            return []
        docs = self.blocks._collection.find(
            {"campaign": campaign, "kind": kind}, projection={"ids": 1}
        )
        return [cid for d in docs for cid in d["ids"]]

    def read_block(
        self, campaign: str, kind: str
    ) -> tuple[list[str], np.ndarray, list[str] | None]:
        """Ids (sorted), values and column names of a block.

        Reads the few block documents; when the block is missing (no ``blocks``
        store, or candidates stored by an older version) it is built from the
        candidates collection once and written.
        """
        docs = []
        if self.blocks is not None:
            docs = sorted(
                self.blocks._collection.find({"campaign": campaign, "kind": kind}),
                key=lambda d: d["chunk"],
            )
        if not docs:
            return self._rebuild_block(campaign, kind)
        ids = [cid for d in docs for cid in d["ids"]]
        columns = None
        if docs[0].get("columns") is not None:
            # Chunks may name different columns (e.g. elements): align on their union.
            columns = sorted({c for d in docs for c in d["columns"]})
        parts = []
        for d in docs:
            part = np.frombuffer(d["data"], dtype=np.float64).reshape(d["shape"])
            if columns is not None:
                aligned = np.zeros((part.shape[0], len(columns)))
                aligned[:, [columns.index(c) for c in d["columns"]]] = part
                part = aligned
            parts.append(part)
        values = np.concatenate(parts) if parts else np.zeros((0, 0))
        order = np.argsort(ids, kind="stable")
        return [ids[i] for i in order], values[order], columns

    def _rebuild_block(
        self, campaign: str, kind: str
    ) -> tuple[list[str], np.ndarray, list[str] | None]:
        field = BLOCK_FIELDS[kind]
        docs = [d for d in self.candidate_table(campaign, [field]) if dotted(d, field) is not None]
        ids = [d["candidate_id"] for d in docs]
        if kind == "composition":
            values, columns = _composition_matrix(docs)
        elif kind == "prescreen_energy":
            values, columns = np.array([[dotted(d, field)] for d in docs], dtype=float), None
            values = values.reshape(len(docs), 1)
        else:
            values, columns = np.array([dotted(d, field) for d in docs], dtype=float), None
        if ids:
            self.write_block(campaign, kind, ids, values, columns)
        return ids, values, columns

    def delete_block(self, campaign: str, kind: str) -> None:
        """Remove every chunk of a block (it is rebuilt on the next read)."""
        key = {"campaign": campaign, "kind": kind}
        if self.blocks is not None and self.blocks.count(key):  # montydb: count first
            self.blocks._collection.delete_many(key)

    # -- lease -------------------------------------------------------------------

    def lease_mutex(self):
        """A lock that serialises lease changes: across processes on the embedded store
        (an OS-enforced file lock next to the database, released by the kernel when its
        process dies), within the process otherwise (MongoDB's ``find_one_and_update``
        is atomic across processes and machines by itself)."""
        path = getattr(self.campaigns, "database_path", None)
        if path is None:
            return contextlib.nullcontext()  # callers hold _LEASE_LOCK as well
        from filelock import FileLock

        Path(path).mkdir(parents=True, exist_ok=True)
        return FileLock(str(Path(path) / ".lease.lock"))

    def acquire_lease(
        self, campaign: str, owner: str, ttl: float, breakable: Sequence[str] = ()
    ) -> bool:
        """Take the campaign's lease for ``ttl`` seconds if it is free, expired, already
        ``owner``'s or held by one of ``breakable`` (owners known to be dead): one
        atomic ``find_one_and_update`` under :meth:`lease_mutex`."""
        t = time.time()
        free = [{"lease": None}, {"lease.expires": {"$lt": t}}, {"lease.owner": owner}]
        free += [{"lease.owner": dead} for dead in breakable]
        with self.lease_mutex(), _LEASE_LOCK:
            taken = self.campaigns._collection.find_one_and_update(
                {"name": campaign, "$or": free},
                {"$set": {"lease": {"owner": owner, "expires": t + ttl, "since": now()}}},
            )
        return taken is not None

    def renew_lease(self, campaign: str, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease by ``ttl`` seconds from now; ``False`` if it lost it."""
        with self.lease_mutex(), _LEASE_LOCK:
            kept = self.campaigns._collection.find_one_and_update(
                {"name": campaign, "lease.owner": owner},
                {"$set": {"lease.expires": time.time() + ttl}},
            )
        return kept is not None

    def lease_holder(self, campaign: str) -> dict | None:
        """The lease (``owner``, ``expires``, ``since``) if someone holds it unexpired."""
        doc = self.campaigns._collection.find_one({"name": campaign}, projection={"lease": 1})
        lease = (doc or {}).get("lease")
        if not lease or lease.get("expires", 0) < time.time():
            return None
        return lease

    def release_lease(self, campaign: str, owner: str) -> None:
        """Give the lease back if ``owner`` holds it."""
        with self.lease_mutex(), _LEASE_LOCK:
            self.campaigns._collection.update_one(
                {"name": campaign, "lease.owner": owner}, {"$set": {"lease": None}}
            )

    def create_campaign_leased(
        self, name: str, config: dict, owner: str, ttl: float, **fields: Any
    ) -> bool:
        """Create a campaign holding ``owner``'s lease, unless a campaign of that name
        exists (``False``): the check and the insert under :meth:`lease_mutex`, so two
        processes starting the same campaign cannot both create it."""
        lease = {"owner": owner, "expires": time.time() + ttl, "since": now()}
        with self.lease_mutex(), _LEASE_LOCK:
            if self.get_campaign(name) is not None:
                return False
            self.create_campaign(name, config, lease=lease, **fields)
        return True

    def heartbeat_copy(self) -> CampaignStores:
        """Stores a heartbeat thread may use: a separate connection on the embedded
        store (one sqlite connection per thread), the same stores otherwise."""
        if getattr(self.campaigns, "database_path", None) is None:
            return self
        campaigns = type(self.campaigns).from_dict(self.campaigns.as_dict())
        _connect_embedded(self.campaigns.database_path, campaigns.connect)
        return CampaignStores(self.candidates, self.labels, self.models, campaigns, self.blocks)

    # -- acquisitions ------------------------------------------------------------

    def record_acquisitions(
        self, campaign: str, entries: Sequence[dict], extra: dict | None = None
    ) -> None:
        """Append questions (:func:`acquisition_entry`) to the campaign document's
        ``acquisitions``, and set the ``extra`` fields (e.g. the decision's history
        entry), in one update: recorded together or not at all.

        Written before any oracle job runs, so a crashed campaign knows what it asked.
        The candidates' mirror fields are written later by :meth:`mirror_acquisitions`.
        """
        update: dict = {"$set": {**jsanitize(extra or {}), "updated_at": now()}}
        if entries:
            update["$push"] = {"acquisitions": {"$each": jsanitize(list(entries))}}
        self.campaigns._collection.update_one({"name": campaign}, update)

    def open_acquisitions(self, doc: dict, labels: Sequence[dict] | None = None) -> list[dict]:
        """Recorded questions without a stored answer (label of their fidelity)."""
        if labels is None:
            labels = self.get_labels(doc["name"], properties=["fidelity"])
        answered = {(lab["candidate_id"], lab["fidelity"]) for lab in labels}
        return [
            a
            for a in doc.get("acquisitions") or []
            if (a["candidate_id"], a["fidelity"]) not in answered
        ]

    def mirror_acquisitions(self, campaign: str, entries: Sequence[dict]) -> None:
        """Write acquisitions onto their candidates (``state``/``acquisition``, or the
        ``cheap_`` pair): ``acquired``, or ``requested`` for an external oracle."""
        updates: dict[str, dict] = {}
        for a in entries:
            state, info = (
                ("cheap_state", "cheap_acquisition")
                if a["cheap"]
                else (
                    "state",
                    "acquisition",
                )
            )
            updates.setdefault(a["candidate_id"], {}).update(
                {
                    state: question_state(a),
                    info: {k: a[k] for k in ("iteration", "rule", "score", "time")},
                }
            )
        self.update_candidates(campaign, updates)

    def reconcile_states(self, campaign: str, fidelity: str, cheap_fidelity: str | None) -> int:
        """Move candidates still marked ``acquired``/``requested`` whose answer is
        stored to ``labelled``/``failed`` (a crash between storing a label and moving
        its candidate); returns how many moved. One scan: for resume, not every
        iteration."""
        stale = self.candidate_table(
            campaign,
            ["state", "cheap_state"],
            {
                "$or": [
                    {"state": {"$in": ["acquired", "requested"]}},
                    {"cheap_state": {"$in": ["acquired", "requested"]}},
                ]
            },
        )
        if not stale:
            return 0
        status = {
            (lab["candidate_id"], lab["fidelity"]): lab["status"]
            for lab in self.get_labels(campaign, properties=["fidelity", "status"])
        }
        moves: dict[tuple[bool, str], list[str]] = {}
        for d in stale:
            for cheap, fid in ((False, fidelity), (True, cheap_fidelity)):
                st = d.get("cheap_state" if cheap else "state")
                if st in ("acquired", "requested") and (d["candidate_id"], fid) in status:
                    new = answered_state(status[d["candidate_id"], fid])
                    moves.setdefault((cheap, new), []).append(d["candidate_id"])
        for (cheap, state), ids in moves.items():
            self.set_state(campaign, ids, state, cheap=cheap)
        return sum(len(v) for v in moves.values())

    # -- labels ------------------------------------------------------------------

    def add_labels(self, docs: Sequence[dict]) -> int:
        """Store oracle answers keyed by (campaign, candidate id, fidelity).

        An answer already stored for the same key is kept, never overwritten, so a
        re-run cannot change or duplicate a label. Returns how many were new.
        """
        if not docs:
            return 0
        campaign = docs[0]["campaign"]
        existing = {
            (d["candidate_id"], d["fidelity"])
            for d in self.labels.query(
                {"campaign": campaign}, properties=["candidate_id", "fidelity"]
            )
        }
        new = [jsanitize(d) for d in docs if (d["candidate_id"], d["fidelity"]) not in existing]
        if new:
            self.labels._collection.insert_many(new)
        return len(new)

    def get_labels(
        self, campaign: str, fidelity: str | None = None, properties: Sequence[str] | None = None
    ) -> list[dict]:
        """Labels of a campaign (optionally one fidelity), sorted by candidate id."""
        query: dict = {"campaign": campaign}
        if fidelity is not None:
            query["fidelity"] = fidelity
        props = ["candidate_id", *properties] if properties else None
        docs = self.labels.query(query, properties=props)
        return sorted(docs, key=lambda d: d["candidate_id"])

    def update_counts(self, campaign: str, fidelity: str) -> tuple[int, float]:
        """Recount the oracle calls (labels at ``fidelity``) and the cost of every label,
        store both in the campaign document and return them."""
        labels = self.get_labels(campaign, properties=["fidelity", "cost"])
        n_calls = sum(lab["fidelity"] == fidelity for lab in labels)
        cost = float(sum(lab.get("cost") or 0.0 for lab in labels))
        self.update_campaign(campaign, {"n_oracle_calls": n_calls, "cost_spent": cost})
        return n_calls, cost

    # -- models ------------------------------------------------------------------

    def add_model(self, doc: dict) -> None:
        """Store one model version (keyed by campaign and iteration)."""
        key = {"campaign": doc["campaign"], "iteration": doc["iteration"]}
        if self.models.count(key):  # (montydb fails to delete from a new collection)
            self.models._collection.delete_many(key)
        self.models._collection.insert_one(jsanitize(doc))

    def latest_model(self, campaign: str) -> dict | None:
        """The model of the highest iteration."""
        docs = list(self.models.query({"campaign": campaign}, properties=["iteration"]))
        if not docs:
            return None
        it = max(d["iteration"] for d in docs)
        return self.models.query_one({"campaign": campaign, "iteration": it})


def _bulk_update(collection, ops: list[tuple[dict, dict]]) -> None:
    """Apply ``(filter, update)`` pairs in one round trip where the backend can."""
    if not ops:
        return
    from pymongo import UpdateOne

    try:
        collection.bulk_write([UpdateOne(f, u) for f, u in ops], ordered=False)
    except NotImplementedError:  # montydb: no bulk_write
        for f, u in ops:
            collection.update_one(f, u)


def dotted(doc: dict, path: str) -> Any:
    """The value at a dotted path (``"prescreen.energy_per_atom"``), ``None`` if absent."""
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _composition_matrix(docs: Sequence[dict]) -> tuple[np.ndarray, list[str]]:
    """Amounts of each element (columns sorted) of candidate documents."""
    elements = sorted({el for d in docs for el in d["composition"]})
    values = np.array([[d["composition"].get(el, 0.0) for el in elements] for d in docs])
    return values.reshape(len(docs), len(elements)), elements


def open_stores(
    store_file: str | Path | None = None, must_exist: bool | str = False
) -> tuple[Any, CampaignStores]:
    """The JobStore of a store file (default: the embedded one), connected and checked
    with :func:`connect_job_store`, and the campaign collections on it.

    ``must_exist``: for commands that only work on stored campaigns (status, query,
    resume, ...): an embedded database that does not exist yet is not created, so such
    a command never creates files; it raises CampaignNotFound when ``must_exist`` is
    the campaign's name, else ConfigError.
    """
    spec = embedded_store_spec() if store_file is None else read_store_spec(store_file)
    if must_exist:
        for sub in [spec["docs_store"], *spec.get("additional_stores", {}).values()]:
            path = sub.get("database_path") if isinstance(sub, dict) else None
            if path is not None and not (Path(path).is_dir() and any(Path(path).iterdir())):
                if isinstance(must_exist, str):
                    raise CampaignNotFound(must_exist)
                raise ConfigError(
                    f"no campaign database at {path} yet (nothing was run with this store): "
                    "start a campaign with 'alcampaign run CONFIG', or pick the store with "
                    "--store / $ALCAMPAIGN_HOME"
                )
    job_store = job_store_from_spec(spec)
    connect_job_store(job_store)
    return job_store, CampaignStores.from_job_store(job_store)
