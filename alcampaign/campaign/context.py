"""What every campaign job starts from: its stores and its campaign document.

Jobs reach the campaign collections through the JobStore that runs them
(``JobConfig(expose_store=True)`` and ``CURRENT_JOB.store``), so a remote worker uses
its own store configuration and no connection string enters a job document. A name
that is not in the store raises :class:`~alcampaign.errors.CampaignNotFound`, the one
"no such campaign" error of every layer.
"""

from __future__ import annotations

from typing import TypeVar

from jobflow import CURRENT_JOB, JobConfig, OnMissing
from pydantic import BaseModel

from alcampaign.config import CampaignConfig
from alcampaign.errors import CampaignNotFound
from alcampaign.store.facade import CampaignStores

STORE_JOB = JobConfig(expose_store=True)
# The ingest jobs must run even when an oracle job failed: its missing outputs
# resolve to None and the label is recorded as failed.
INGEST_JOB = JobConfig(expose_store=True, on_missing_references=OnMissing.NONE)

_C = TypeVar("_C", bound=BaseModel)


def job_stores() -> CampaignStores:
    """The campaign stores of the JobStore running the current job.

    Raises
    ------
    RuntimeError
        Outside a job, or in a job without ``expose_store=True``.
    """
    store = CURRENT_JOB.store
    if store is None:
        raise RuntimeError("campaign jobs must run with expose_store=True")
    from alcampaign.campaign.managers import campaign_job_store  # jobflow-remote: $ALCAMPAIGN_STORE

    return CampaignStores.from_job_store(campaign_job_store(store))


def campaign_document(stores: CampaignStores, name: str) -> dict:
    """The campaign document named ``name``.

    Raises
    ------
    CampaignNotFound
        No campaign of that name in these stores.
    """
    doc = stores.get_campaign(name)
    if doc is None:
        raise CampaignNotFound(name)
    return doc


def load_campaign(
    stores: CampaignStores, name: str, model: type[_C] = CampaignConfig, kind: str | None = None
) -> tuple[dict, _C]:
    """The campaign document and its config, validated by ``model``.

    Parameters
    ----------
    kind
        The campaign ``kind`` the caller needs (e.g. ``otf_md``); ``None``: any.

    Raises
    ------
    CampaignNotFound
        No campaign of that name.
    ValueError
        The campaign is of another kind.
    """
    doc = campaign_document(stores, name)
    if kind is not None and doc.get("kind") != kind:
        what = "an on-the-fly MD" if kind == "otf_md" else f"a {kind}"
        raise ValueError(f"campaign {name!r} is not {what} campaign")
    return doc, model.model_validate(doc["config"])
