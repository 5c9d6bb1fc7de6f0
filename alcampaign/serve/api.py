"""Read-only HTTP API over the campaign stores (FastAPI with maggma's API tools).

One maggma ``ReadOnlyResource`` per collection serves the stored documents as they are,
with maggma's pagination (``_page``/``_per_page`` or ``_skip``/``_limit``, at most
1,000 per request), field projection (``_fields``), sorting (``_sort_fields``) and
filters; the dashboard's own routes (joined candidate table, plot data, CIF download)
are plain FastAPI routes beside them (:mod:`alcampaign.serve.dashboard`). Every route reads
through :func:`alcampaign.store.readonly.read_only` views, so nothing can be written, and
every document passes :func:`~alcampaign.store.readonly.redact` on its way out.

=====================  ==================================================
``/api/campaigns/``    campaign documents (``name``, ``state`` filters)
``/api/campaigns/N/``  one campaign document by name
``/api/candidates/``   candidates (``campaign``, ``state``, ``formula``...)
``/api/labels/``       oracle answers (``campaign``, ``fidelity``...)
``/api/models/``       model versions (``campaign``, ``iteration``)
=====================  ==================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from maggma.api.query_operator import (
    NumericQuery,
    PaginationQuery,
    QueryOperator,
    SortQuery,
    SparseFieldsQuery,
)
from maggma.api.resource import ReadOnlyResource

from alcampaign.campaign import documents
from alcampaign.campaign.documents import api_view
from alcampaign.serve.table_cache import CandidateTableCache
from alcampaign.store.facade import CANDIDATE_STATES, CampaignStores
from alcampaign.store.readonly import UnsupportedQuery, read_only, redact

MAX_PER_PAGE = 1000
# Fields served when a request names none (``_fields``); ``_all_fields=true`` for all.
CAMPAIGN_FIELDS = [
    "name",
    "state",
    "iteration",
    "n_oracle_calls",
    "stop_reason",
    "metrics",
    "updated_at",
]
LABEL_FIELDS = [
    "campaign",
    "candidate_id",
    "fidelity",
    "status",
    "energy_per_atom",
    "cost",
    "iteration",
    "time",
]

# -- documents: the stored documents' models (alcampaign.campaign.documents), every
# field optional (the API serves projections), so the OpenAPI schema describes them.

CandidateDoc = api_view(
    "CandidateDoc", documents.Candidate, documents.Frame, doc="A candidate structure or MD frame."
)
LabelDoc = api_view("LabelDoc", documents.Label, doc="An oracle answer.")
ModelDoc = api_view(
    "ModelDoc", documents.SurrogateModel, documents.PotentialModel, doc="A model version."
)
CampaignDoc = api_view("CampaignDoc", documents.Campaign, doc="A campaign.")


# -- query operators -------------------------------------------------------------------


class FieldFilter(QueryOperator):
    """Equality filters on named fields, with allowed values checked (400 otherwise).

    Parameters
    ----------
    fields
        ``{query parameter: (document field, type, description)}``.
    choices
        Allowed values of some parameters.
    """

    def __init__(
        self,
        fields: dict[str, tuple[str, type, str]],
        choices: dict[str, Sequence[str]] | None = None,
    ) -> None:
        self.fields = fields
        self.choices = choices or {}

        def query(**kwargs) -> dict:
            criteria = {}
            for param, value in kwargs.items():
                if value is None:
                    continue
                allowed = self.choices.get(param)
                if allowed is not None and value not in allowed:
                    raise HTTPException(
                        400, f"{param}={value!r}: choose one of {', '.join(allowed)}"
                    )
                criteria[self.fields[param][0]] = value
            return {"criteria": criteria}

        query.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    param,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=Query(None, description=desc),
                    annotation=kind | None,
                )
                for param, (_, kind, desc) in fields.items()
            ]
        )
        self.query = query  # type: ignore[method-assign]

    def query(self) -> dict:  # replaced per instance in __init__ (as maggma's operators do)
        """Filter parameters of the endpoint."""
        return {}


class Redact(QueryOperator):
    """Replaces credential-like values in every document served (post-processing)."""

    def query(self) -> dict:
        return {}

    def post_process(self, docs: list[dict], query: dict) -> list[dict]:
        return [redact(d) for d in docs]


def _resource(store, model, default_fields, filters, numeric=None, sort=None, by_key=False):
    ops = [
        filters,
        *([NumericQuery(model, fields=numeric)] if numeric else []),
        SortQuery(fields=sort, max_num=2),
        PaginationQuery(default_limit=100, max_limit=MAX_PER_PAGE),
        SparseFieldsQuery(model, default_fields=default_fields),
        Redact(),
    ]
    return ReadOnlyResource(
        store,
        model,
        tags=[model.__name__],
        query_operators=ops,
        enable_get_by_key=by_key,
        disable_validation=True,  # orjson straight out; the projections keep docs small
    )


def resources(stores: CampaignStores) -> dict[str, ReadOnlyResource]:
    """One maggma ``ReadOnlyResource`` per campaign collection (read-only views)."""
    campaign = ("campaign", str, "Campaign name.")
    return {
        "campaigns": _resource(
            stores.campaigns,
            CampaignDoc,
            CAMPAIGN_FIELDS,
            FieldFilter(
                {"name": ("name", str, "Campaign name."), "state": ("state", str, "State.")}
            ),
            numeric=["iteration", "n_oracle_calls"],
            sort=["name", "updated_at", "iteration", "n_oracle_calls"],
            by_key=True,
        ),
        "candidates": _resource(
            stores.candidates,
            CandidateDoc,
            ["campaign", "candidate_id", "formula", "n_sites", "state", "acquisition"],
            FieldFilter(
                {
                    "campaign": campaign,
                    "candidate_id": ("candidate_id", str, "Candidate id."),
                    "formula": ("formula", str, "Reduced formula, e.g. CuAu."),
                    "state": ("state", str, "Candidate state."),
                    "acquired_in": ("acquisition.iteration", int, "Acquired in this iteration."),
                },
                {"state": CANDIDATE_STATES},
            ),
            numeric=["n_sites"],
            sort=["candidate_id", "formula", "n_sites", "state"],
        ),
        "labels": _resource(
            stores.labels,
            LabelDoc,
            LABEL_FIELDS,
            FieldFilter(
                {
                    "campaign": campaign,
                    "candidate_id": ("candidate_id", str, "Candidate id."),
                    "fidelity": ("fidelity", str, "Oracle fidelity."),
                    "status": ("status", str, "success or failed."),
                },
                {"status": ("success", "failed")},
            ),
            numeric=["energy_per_atom", "cost", "iteration"],
            sort=["candidate_id", "energy_per_atom", "iteration", "time"],
        ),
        "models": _resource(
            stores.models,
            ModelDoc,
            ["campaign", "iteration", "kind", "metrics", "n_train", "time"],
            FieldFilter({"campaign": campaign}),
            numeric=["iteration"],
            sort=["iteration", "time"],
        ),
    }


# -- the app ---------------------------------------------------------------------------


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 with one readable sentence per bad parameter, instead of FastAPI's 422."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
        got = err.get("input")
        problems.append(f"{where}: {err.get('msg')}" + (f" (got {got!r})" if got else ""))
    return JSONResponse({"detail": "bad parameter " + "; ".join(problems)}, status_code=400)


def create_app(
    stores: CampaignStores, poll_seconds: float = 10.0, cached_campaigns: int = 4
) -> FastAPI:
    """The read-only API and the dashboard over a connected set of campaign stores.

    Parameters
    ----------
    stores
        Connected campaign stores; the app keeps only read-only views of them.
    poll_seconds
        How often the dashboard pages refresh their numbers (0: only on reload).
    cached_campaigns
        Campaigns whose candidate tables the server keeps in memory
        (:class:`~alcampaign.serve.table_cache.CandidateTableCache`).
    """
    from alcampaign.serve import dashboard

    view = read_only(stores)
    app = FastAPI(
        title="alcampaign",
        description="Read-only API and dashboard over the campaign stores.",
        version="1",
    )
    app.state.stores = view
    app.state.poll_seconds = poll_seconds
    app.state.table_cache = CandidateTableCache(cached_campaigns)
    for prefix, resource in resources(view).items():
        app.include_router(resource.router, prefix=f"/api/{prefix}")
    app.include_router(dashboard.router)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(UnsupportedQuery)
    def _unsupported(request: Request, exc: UnsupportedQuery) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/api/heartbeat", include_in_schema=False)
    def heartbeat() -> dict:
        return {"status": "OK", "read_only": True}

    return app
