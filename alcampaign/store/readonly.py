"""Read-only views of the campaign stores, for the HTTP API and the dashboard.

A served app must never write: instead of trusting every route to behave, the app only
ever holds these views. :class:`ReadOnlyCollection` exposes the reading half of a
pymongo collection (``find``, ``count_documents``, and an ``aggregate`` limited to the
stages maggma's ``ReadOnlyResource`` builds) and nothing else, so a write is an
``AttributeError``. It also makes maggma's API work on the embedded store: montydb
has no ``aggregate``, so the simple pipeline maggma builds (``$match``, ``$sort``,
``$project``, ``$skip``, ``$limit``) is run as one ``find`` with a projection, sort,
skip and limit on every backend.

One lock serialises access: mongomock (``MemoryStore``) is not thread-safe and a
served app answers requests from a thread pool.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from alcampaign.store.facade import CampaignStores
from alcampaign.store.redaction import REDACTED, redact, redact_text

__all__ = [
    "REDACTED",
    "ReadOnlyCollection",
    "ReadOnlyStore",
    "UnsupportedQuery",
    "read_only",
    "redact",
    "redact_text",
]

# The one redaction (by key and by value) lives in its own module; re-exported here.
COLLECTIONS = ("candidates", "labels", "models", "campaigns")
# A campaign is found by its name (whatever key the store file gives the collection).
KEYS = {"campaigns": "name"}
# Optional collections (``None`` where the store file has none).
OPTIONAL = ("blocks",)


class UnsupportedQuery(ValueError):
    """A pipeline stage or option the read-only view does not run."""


class ReadOnlyCollection:
    """The reading half of a pymongo-like collection (MongoDB, mongomock, montydb).

    Parameters
    ----------
    collection
        The underlying collection (``store._collection``).
    lock
        Serialises every access (shared by the views of one app).
    """

    def __init__(self, collection, lock: threading.RLock) -> None:
        self._inner = collection
        self._lock = lock

    def find(
        self,
        filter: dict | None = None,
        projection: dict | Sequence[str] | None = None,
        sort: Sequence[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[dict]:
        """Matching documents as a list (``_id`` never included)."""
        if projection is None:
            proj: dict = {"_id": 0}
        elif isinstance(projection, dict):
            proj = {"_id": 0, **projection}
        else:
            proj = {"_id": 0, **dict.fromkeys(projection, 1)}
        with self._lock:
            cursor = self._inner.find(filter or {}, proj)
            if sort:
                cursor = cursor.sort(list(sort))
            if skip:
                cursor = cursor.skip(int(skip))
            if limit:
                cursor = cursor.limit(int(limit))
            return list(cursor)

    def find_one(self, filter: dict | None = None, projection=None) -> dict | None:
        """The first matching document, or ``None``."""
        docs = self.find(filter, projection, limit=1)
        return docs[0] if docs else None

    def count_documents(self, filter: dict | None = None) -> int:
        """Number of matching documents."""
        with self._lock:
            return int(self._inner.count_documents(filter or {}))

    def aggregate(self, pipeline: list[dict], **kwargs) -> list[dict]:
        """Run the ``$match``/``$sort``/``$project``/``$skip``/``$limit`` pipeline that
        maggma's ``ReadOnlyResource`` builds, as one ``find``."""
        if kwargs:
            raise UnsupportedQuery(f"aggregate options {sorted(kwargs)} are not supported")
        query: dict[str, Any] = {"filter": {}, "projection": None, "sort": None}
        skip, limit = 0, 0
        for stage in pipeline:
            (op, arg), *rest = stage.items()
            if rest:
                raise UnsupportedQuery(f"pipeline stage with several operators: {stage}")
            if op == "$match":
                query["filter"] = arg
            elif op == "$sort":
                query["sort"] = list(arg.items())
            elif op == "$project":
                query["projection"] = arg
            elif op == "$skip":
                skip = arg
            elif op == "$limit":
                limit = arg
            else:
                raise UnsupportedQuery(f"pipeline stage {op} is not supported")
        return self.find(**query, skip=skip, limit=limit)


class ReadOnlyStore:
    """The part of the maggma ``Store`` interface that reading needs, over a
    :class:`ReadOnlyCollection` (what ``ReadOnlyResource`` and
    :class:`~alcampaign.store.facade.CampaignStores`' readers call)."""

    def __init__(self, store, lock: threading.RLock, key: str | None = None) -> None:
        self.key = key or store.key
        self.last_updated_field = store.last_updated_field
        self.name = type(store).__name__
        self._collection = ReadOnlyCollection(store._collection, lock)

    def connect(self, force_reset: bool = False) -> None:
        """No-op: the underlying store was connected when the app was built."""

    def count(self, criteria: dict | None = None, hint=None) -> int:
        """Number of documents matching ``criteria``."""
        return self._collection.count_documents(criteria)

    def query(
        self,
        criteria: dict | None = None,
        properties: Sequence[str] | dict | None = None,
        sort: dict[str, int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[dict]:
        """Documents matching ``criteria`` with only ``properties``."""
        return self._collection.find(
            criteria, properties, list(sort.items()) if sort else None, skip, limit
        )

    def query_one(self, criteria: dict | None = None, properties=None) -> dict | None:
        """The first document matching ``criteria``, or ``None``."""
        return self._collection.find_one(criteria, properties)


def read_only(stores: CampaignStores) -> CampaignStores:
    """The same collections as read-only views behind one lock.

    The readers of :class:`~alcampaign.store.facade.CampaignStores` (``get_campaign``,
    ``candidate_table``, ``get_labels``, ``latest_model``...) work unchanged; its
    writers fail with ``AttributeError`` because the views have no write methods.
    """
    lock = threading.RLock()
    views = [ReadOnlyStore(getattr(stores, c), lock, KEYS.get(c)) for c in COLLECTIONS]
    optional = [
        None if getattr(stores, c) is None else ReadOnlyStore(getattr(stores, c), lock)
        for c in OPTIONAL
    ]
    return CampaignStores(*views, *optional)
