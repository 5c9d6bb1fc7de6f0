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
import os
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from maggma.api.query_operator import NumericQuery, QueryOperator
from maggma.api.resource import ReadOnlyResource

from alcampaign.serve.queries import CheckedFields, CheckedPagination, CheckedSort
from alcampaign.serve.security import SecurityMiddleware
from alcampaign.serve.table_cache import CandidateTableCache
from alcampaign.serve.views import CampaignDoc, CandidateDoc, LabelDoc, ModelDoc  # noqa: F401
from alcampaign.store.facade import CampaignStores
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
    """Passes every document served through :func:`alcampaign.store.redaction.redact`
    (post-processing).

    Parameters
    ----------
    root
        Folder that absolute paths are shown relative to.
    """

    def __init__(self, root=None) -> None:
        self.root = root

    def query(self) -> dict:
        return {}

    def post_process(self, docs: list[dict], query: dict) -> list[dict]:
        return [redact(d, self.root) for d in docs]


def _resource(
    store, model, default_fields, filters, numeric=None, sort=None, by_key=False, root=None
):
    ops = [
        filters,
        *([NumericQuery(model, fields=numeric)] if numeric else []),
        CheckedSort(sort, max_num=2),
        CheckedPagination(default_limit=100, max_limit=MAX_PER_PAGE),
        CheckedFields(model, default_fields),
        Redact(root),
    ]
    return ReadOnlyResource(
        store,
        model,
        tags=[model.__name__],
        query_operators=ops,
        enable_get_by_key=by_key,
        disable_validation=True,  # orjson straight out; the projections keep docs small
    )


def resources(stores: CampaignStores, root=None) -> dict[str, ReadOnlyResource]:
    """One maggma ``ReadOnlyResource`` per campaign collection but the candidates
    (:mod:`alcampaign.serve.candidates` pages those from the dashboard's table), over
    read-only views; absolute paths are shown relative to ``root``."""
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
            root=root,
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
            root=root,
        ),
        "models": _resource(
            stores.models,
            ModelDoc,
            ["campaign", "iteration", "kind", "metrics", "n_train", "time"],
            FieldFilter({"campaign": campaign}),
            numeric=["iteration"],
            sort=["iteration", "time"],
            root=root,
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
    stores: CampaignStores,
    poll_seconds: float = 10.0,
    cached_campaigns: int = 4,
    allowed_hosts: Sequence[str] = (),
    path_root: str | os.PathLike | None = None,
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
    allowed_hosts
        Host names answered besides ``localhost``, ``127.0.0.1`` and ``::1``
        (:class:`~alcampaign.serve.security.SecurityMiddleware`); any other ``Host``
        header is refused.
    path_root
        Folder that absolute paths in served documents are shown relative to (default:
        the current folder); paths outside it are shown by their file name only.
    """
    from alcampaign.serve import candidates, dashboard

    view = read_only(stores)
    app = FastAPI(
        title="alcampaign",
        description="Read-only API and dashboard over the campaign stores. "
        "The schema is at /openapi.json (no documentation page: nothing is loaded "
        "from the internet).",
        version="1",
        docs_url=None,
        redoc_url=None,
    )
    app.state.stores = view
    app.state.poll_seconds = poll_seconds
    app.state.table_cache = CandidateTableCache(cached_campaigns)
    app.state.path_root = Path(path_root if path_root is not None else Path.cwd()).resolve()
    app.include_router(candidates.router)
    for prefix, resource in resources(view, app.state.path_root).items():
        app.include_router(resource.router, prefix=f"/api/{prefix}")
    app.include_router(dashboard.router)
    app.add_middleware(SecurityMiddleware, allowed_hosts=tuple(allowed_hosts))
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(UnsupportedQuery)
    def _unsupported(request: Request, exc: UnsupportedQuery) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/api/heartbeat", include_in_schema=False)
    def heartbeat() -> dict:
        return {"status": "OK", "read_only": True}

    return app
