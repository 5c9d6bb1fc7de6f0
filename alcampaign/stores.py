"""The one module that reads and writes the campaign collections.

The collections (``candidates``, ``labels``, ``models``, ``campaigns``) are maggma
stores, reached as ``additional_stores`` of the jobflow ``JobStore`` that runs the
campaign's jobs. Writes are bulk where the backend allows: the embedded MontyStore has
no indexes and no ``bulk_write``, and maggma's ``Store.update`` does one upsert per
document, so new candidates go in with one ``insert_many`` and per-candidate updates
with ``bulk_write`` (MongoDB, mongomock) or a tight ``update_one`` loop (montydb).
Reads are one query with a projection per collection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from monty.json import jsanitize

from alcampaign.config import ConfigError, embedded_store_spec, read_store_spec, validate_store_spec

CANDIDATE_STATES = ("pool", "acquired", "requested", "labelled", "failed")


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


def connect_job_store(store) -> None:
    """Connect every store of a JobStore and make one round trip, so that an unreachable
    database fails here, with an error that says what to fix, before anything runs."""
    try:
        store.connect()
        store.additional_stores["campaigns"].count({"name": "__ping__"})
    except Exception as exc:
        raise ConfigError(
            f"could not connect to the database ({type(store.docs_store).__name__}): {exc}. "
            "Check that the server is reachable and the store file's environment variables "
            "are set."
        ) from None


@dataclass
class CampaignStores:
    """Typed access to the campaign collections of one JobStore."""

    candidates: Any
    labels: Any
    models: Any
    campaigns: Any

    @classmethod
    def from_job_store(cls, store) -> CampaignStores:
        """Take the campaign collections from a connected JobStore's additional stores."""
        extra = store.additional_stores
        missing = [c for c in ("candidates", "labels", "models", "campaigns") if c not in extra]
        if missing:
            raise ConfigError(f"the job store lacks the additional store(s) {', '.join(missing)}")
        return cls(extra["candidates"], extra["labels"], extra["models"], extra["campaigns"])

    # -- campaigns ---------------------------------------------------------------

    def get_campaign(self, name: str) -> dict | None:
        """The campaign document, or ``None``."""
        return self.campaigns.query_one({"name": name})

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
        """Insert candidates not stored yet (by id); returns how many were new."""
        existing = self.candidate_ids(campaign)
        new = [jsanitize(d) for d in docs if d["candidate_id"] not in existing]
        if new:
            self.candidates._collection.insert_many(new)
        return len(new)

    def candidate_table(
        self, campaign: str, properties: Sequence[str], criteria: dict | None = None
    ) -> list[dict]:
        """One query: the given fields of the campaign's candidates, sorted by id."""
        query = {"campaign": campaign, **(criteria or {})}
        docs = self.candidates.query(query, properties=["candidate_id", *properties])
        return sorted(docs, key=lambda d: d["candidate_id"])

    def feature_block(
        self, campaign: str, field: str = "features", extra: Sequence[str] = ()
    ) -> tuple[list[str], np.ndarray, list[dict]]:
        """Ids, feature matrix and per-candidate fields, read in one query.

        ``field`` is a dotted path to the feature vector (``features`` or
        ``prescreen.embedding``); the returned dicts hold ``state``, ``cheap_state`` and
        the ``extra`` fields.
        """
        docs = self.candidate_table(campaign, [field, "state", "cheap_state", *extra])
        ids = [d["candidate_id"] for d in docs]
        X = np.array([_dotted(d, field) for d in docs], dtype=float)
        return ids, X, docs

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

    def record_acquisitions(
        self,
        campaign: str,
        ids: Sequence[str],
        iteration: int,
        rule: str,
        scores: Sequence[float],
        cheap: bool = False,
        external: bool = False,
    ) -> None:
        """Mark candidates ``acquired`` with the iteration, rule and score that chose them.

        Written before any oracle job runs, so a crashed campaign knows what it asked.
        ``cheap`` acquisitions (the cheap fidelity of a multi-fidelity campaign) go to
        ``cheap_state`` and ``cheap_acquisition`` instead; ``external`` ones (an oracle
        outside the workflow) are marked ``requested`` rather than ``acquired``.
        """
        state, info = ("cheap_state", "cheap_acquisition") if cheap else ("state", "acquisition")
        value = "requested" if external else "acquired"
        self.update_candidates(
            campaign,
            {
                cid: {
                    state: value,
                    info: {"iteration": iteration, "rule": rule, "score": float(s), "time": now()},
                }
                for cid, s in zip(ids, scores, strict=True)
            },
        )

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


def _dotted(doc: dict, path: str) -> Any:
    for part in path.split("."):
        doc = doc[part]
    return doc
