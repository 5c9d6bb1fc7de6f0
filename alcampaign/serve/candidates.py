"""``/api/candidates/``: the candidates collection, paged from the dashboard's table.

A page read straight from the candidates collection costs a scan of the collection
on the embedded store (montydb decodes every document and has no indexes): a minute
or more per page at 100,000 candidates. Where a request names a campaign and asks only
for the fields the dashboard's in-memory table holds (``campaign``, ``candidate_id``,
``formula``, ``n_sites``, ``state``, ``acquisition``: the default), it is answered
from that table (:meth:`~alcampaign.serve.table_cache.CandidateTableCache.select`),
the same one the dashboard pages from; states and acquisitions there are the truth
(labels and recorded questions), not the mirror in the candidate documents. Other
requests (no campaign, or ``structure``/``features``/``prescreen``... asked for) read
the collection with one projected, sorted, capped query.

The parameters and the response are maggma's (``data`` and ``meta.total_doc``), with
every value checked (:mod:`alcampaign.serve.queries`).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from maggma.api.utils import serialization_helper

from alcampaign.serve.queries import check_fields, check_sort, pagination_params
from alcampaign.serve.security import served
from alcampaign.serve.views import CandidateDoc
from alcampaign.store.facade import CANDIDATE_STATES

router = APIRouter()
MAX_PER_PAGE = 1000
TABLE_FIELDS = ["campaign", "candidate_id", "formula", "n_sites", "state", "acquisition"]
SORTABLE = ["candidate_id", "formula", "n_sites", "state"]
PARAMS = {
    "campaign",
    "candidate_id",
    "formula",
    "state",
    "acquired_in",
    "n_sites_min",
    "n_sites_max",
    "_page",
    "_per_page",
    "_skip",
    "_limit",
    "_fields",
    "_all_fields",
    "_sort_fields",
}


def _project(doc: dict, properties: list[str]) -> dict:
    """``doc`` with only ``properties`` (dotted paths), as a MongoDB projection."""
    out: dict = {}
    for path in properties:
        *parents, last = path.split(".")
        src, dst = doc, out
        for part in parents:
            src = src.get(part) if isinstance(src, dict) else None
            if not isinstance(src, dict):
                break
            dst = dst.setdefault(part, {})
        else:
            if isinstance(src, dict) and last in src:
                dst[last] = src[last]
    return out


@router.get(
    "/api/candidates/",
    tags=["CandidateDoc"],
    summary="Get CandidateDoc documents",
    responses={200: {"model": list[CandidateDoc], "description": "A page of candidates."}},
)
def candidates(
    request: Request,
    campaign: str | None = Query(None, description="Campaign name."),
    candidate_id: str | None = Query(None, description="Candidate id."),
    formula: str | None = Query(None, description="Reduced formula, e.g. CuAu."),
    state: str | None = Query(None, description=f"One of {', '.join(CANDIDATE_STATES)}."),
    acquired_in: int | None = Query(None, description="Acquired in this iteration."),
    n_sites_min: float | None = Query(None, description="At least this many atoms."),
    n_sites_max: float | None = Query(None, description="At most this many atoms."),
    page: tuple[int, int] = Depends(pagination_params(100, MAX_PER_PAGE)),
    _fields: str | None = Query(
        None, description="Comma-separated fields (default: the table's fields)."
    ),
    _all_fields: bool = Query(False, description="Include all fields."),
    _sort_fields: str | None = Query(
        None, description=f"Comma-separated, among {', '.join(SORTABLE)}; '-' for descending."
    ),
) -> Response:
    """Candidates with filters, projection, sort and pagination (see the module
    docstring for where a page is read from)."""
    from alcampaign.serve.dashboard import CACHE_KEY_FIELDS

    unknown = sorted(set(request.query_params) - PARAMS)
    if unknown:
        raise HTTPException(
            400, f"Request contains query parameters which cannot be used: {', '.join(unknown)}"
        )
    if state is not None and state not in CANDIDATE_STATES:
        raise HTTPException(400, f"state={state!r}: choose one of {', '.join(CANDIDATE_STATES)}")
    allowed = list(CandidateDoc.model_fields)
    if _all_fields:
        properties = allowed
    else:
        properties = TABLE_FIELDS if _fields is None else check_fields(_fields, allowed)
    sort = check_sort(_sort_fields, SORTABLE)
    skip, limit = page
    where: dict = {
        k: v
        for k, v in (
            ("campaign", campaign),
            ("candidate_id", candidate_id),
            ("formula", formula),
            ("state", state),
            ("acquisition.iteration", acquired_in),
        )
        if v is not None
    }
    bounds = {op: v for op, v in (("$gte", n_sites_min), ("$lte", n_sites_max)) if v is not None}
    if bounds:
        where["n_sites"] = bounds
    stores = request.app.state.stores
    from_table = campaign is not None and {p.split(".")[0] for p in properties} <= set(TABLE_FIELDS)
    if from_table:
        doc = stores.campaigns.query_one({"name": campaign}, CACHE_KEY_FIELDS)
        total, docs = 0, []
        if doc is not None:
            total, docs = request.app.state.table_cache.select(
                stores, doc, where=where, sort=sort, skip=skip, limit=limit
            )
        docs = [_project(d, properties) for d in docs]
    else:
        total = stores.candidates.count(where)
        docs = stores.candidates.query(where, properties, dict(sort) or None, skip, limit)
    body = {
        "data": served(request, docs),
        "meta": {
            "total_doc": total,
            "max_limit": MAX_PER_PAGE,
            "default_fields": TABLE_FIELDS,
            "source": "table" if from_table else "collection",
        },
    }
    return Response(
        orjson.dumps(body, default=serialization_helper, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
    )
