"""The web dashboard: HTML pages and the JSON routes behind them (plain FastAPI).

These routes join and reshape what maggma's per-collection resources cannot: the
campaign list with metrics against their thresholds, the plot data of
:func:`alcampaign.report.build.collect` (the same numbers as ``alcampaign report`` and
``status --json``), a candidate table that joins each page of candidates with its
labels and surrogate predictions, and a CIF download. The candidate table is paged
on the server from an in-memory table per campaign (:mod:`alcampaign.serve.table_cache`),
kept current by cheap checks of the campaign document, its labels and blocks.

The pages are static HTML with a little JavaScript that fetches these routes and
polls them (``poll_seconds``); plotly.js is served from the installed ``plotly``
package, so nothing is loaded from the internet.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse

from alcampaign.campaign.status import STATUS_FIELDS, status_record
from alcampaign.errors import CampaignNotFound
from alcampaign.report.build import calibration_curve, collect, hull_table, summary
from alcampaign.serve.security import csp_nonce, served
from alcampaign.store.facade import CANDIDATE_STATES, CampaignStores

router = APIRouter()
MAX_TABLE_PAGE = 500
MAX_HULL_PREDICTED = 2000  # unlabelled candidates drawn on the hull plot (closest first)
# The sorts of the candidate table (ties by id; missing values first, as MongoDB does).
SORTS = {
    "candidate_id": [("candidate_id", 1)],
    "formula": [("formula", 1), ("candidate_id", 1)],
    "n_sites": [("n_sites", 1), ("candidate_id", 1)],
    "state": [("state", 1), ("candidate_id", 1)],
    "chgnet_energy": [("prescreen.energy_per_atom", 1), ("candidate_id", 1)],
}
# What the table cache's keys and overlay read from the campaign document.
CACHE_KEY_FIELDS = [
    "name",
    "created_at",
    "updated_at",
    "enumeration",
    "prescreen",
    "acquisitions",
    "config.oracle.fidelity",
]


def _stores(request: Request) -> CampaignStores:
    return request.app.state.stores


def _only(request: Request, allowed: set[str]) -> None:
    """400 for query parameters a route does not take (a typo must not be ignored)."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise HTTPException(
            400,
            f"unknown query parameter(s) {', '.join(unknown)}; this route takes "
            f"{', '.join(sorted(allowed)) or 'none'}",
        )


def _campaign(stores: CampaignStores, name: str, properties=None) -> dict:
    """The campaign document; 404 (:class:`~alcampaign.errors.CampaignNotFound`'s
    message) where there is none."""
    try:
        return stores.require_campaign(name, properties)
    except CampaignNotFound as exc:
        raise HTTPException(404, str(exc)) from None


def _out(request: Request, obj):
    """What a JSON route sends: a JSON-safe copy (:func:`_finite`) through the one
    redaction (:func:`alcampaign.serve.security.served`)."""
    return served(request, _finite(obj))


def _finite(obj):
    """JSON-safe copy: NaN and infinities become ``None``, numpy scalars Python ones."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- JSON routes -----------------------------------------------------------------------


@router.get("/api/dashboard/campaigns", tags=["dashboard"])
def campaign_list(request: Request) -> list[dict]:
    """Every campaign: name, system, state, iteration, oracle calls, metrics against
    their thresholds (the stopping criteria), last activity; newest first."""
    _only(request, set())
    docs = _stores(request).campaigns.query({}, STATUS_FIELDS)
    rows = [status_record(d) for d in docs]
    return _out(request, sorted(rows, key=lambda r: r["updated_at"] or "", reverse=True))


@router.get("/api/dashboard/campaigns/{name}/status", tags=["dashboard"])
def campaign_status(name: str, request: Request) -> dict:
    """Exactly the object ``alcampaign status NAME --json`` prints."""
    _only(request, set())
    return _out(request, status_record(_campaign(_stores(request), name)))


@router.get("/api/dashboard/campaigns/{name}/plots", tags=["dashboard"])
def campaign_plots(name: str, request: Request) -> dict:
    """Plot data and summary numbers, from :func:`alcampaign.report.build.collect` (the
    numbers ``alcampaign report`` draws): learning curve, calibration, parity, convex
    hull, the decisions of every iteration and every acquisition."""
    _only(request, set())
    try:
        data = collect(_stores(request), name)
    except LookupError as exc:  # CampaignNotFound (or collect's KeyError)
        raise HTTPException(404, exc.args[0]) from None
    hull = hull_table(data)
    doc = data.doc
    stopping = doc["config"].get("stopping", {})
    history = doc.get("history") or []
    out: dict = {
        "summary": summary(data, hull),
        "learning_curve": {
            "n_oracle_calls": [h["n_oracle_calls"] for h in history],
            "rmse": [h["metrics"].get("rmse") for h in history],
            "mae": [h["metrics"].get("mae") for h in history],
            "targets": {k: stopping.get(k) for k in ("rmse_target", "mae_target")},
        },
        "calibration": None,
        "parity": None,
        "hull": None,
        "history": [
            {
                "iteration": h["iteration"],
                "rule": h.get("rule"),
                "n_oracle_calls": h["n_oracle_calls"],
                "rmse": h["metrics"].get("rmse"),
                "acquired": h.get("acquired") or [],
                "decision": h["decision"].get("reason")
                or ("stop" if h["decision"].get("stop") else "go on"),
                "time": h.get("time"),
            }
            for h in history
        ],
        "acquisitions": sorted(
            data.acquisitions, key=lambda a: (a.get("iteration") or 0, -(a.get("score") or 0))
        ),
    }
    cv = (data.model or {}).get("cv_predictions")
    if cv:
        energy = {lab["candidate_id"]: lab["energy_per_atom"] for lab in data.labels}
        ids = data.model["training_ids"]
        y = np.array([energy[cid] for cid in ids])
        mean, std = np.array(cv["mean"]), np.array(cv["std"])
        nominal, observed = calibration_curve(y, mean, std)
        out["calibration"] = {
            "nominal": nominal.tolist(),
            "observed": observed.tolist(),
            # The campaign's own ECE: each residual scaled by a recalibration fitted
            # without it (the stored std uses the factor fitted on all of them).
            "ece": (data.doc.get("metrics") or {}).get("ece"),
        }
        out["parity"] = {"ids": ids, "oracle": y.tolist(), "mean": cv["mean"], "std": cv["std"]}
    if hull:
        good = [lab["candidate_id"] for lab in data.labels if lab["status"] == "success"]
        out["hull"] = {**hull, "ids": good, "predicted": _nearest_predicted(hull.get("predicted"))}
    return _out(request, out)


def _nearest_predicted(pred: dict | None, keep: int = MAX_HULL_PREDICTED) -> dict | None:
    """The unlabelled candidates' predicted hull points, at most ``keep`` of them: those
    predicted closest to (or below) the labelled hull, so a browser draws a large pool."""
    if not pred or len(pred["ids"]) <= keep:
        return pred
    order = np.argsort(pred["e_above_hull"], kind="stable")[:keep]
    return {
        **pred,
        "n_total": len(pred["ids"]),
        **{
            k: [pred[k][i] for i in order]
            for k in ("ids", "x", "formation_energy", "std", "e_above_hull", "p_on_hull")
            if pred.get(k) is not None
        },
    }


@router.get("/api/dashboard/campaigns/{name}/candidates", tags=["dashboard"])
def candidate_page(
    name: str,
    request: Request,
    page: int = Query(1, ge=1, description="Page number, from 1."),
    per_page: int = Query(50, ge=1, le=MAX_TABLE_PAGE, description="Rows per page."),
    search: str | None = Query(
        None, max_length=100, description="Part of the formula, or the start of the id."
    ),
    state: str | None = Query(None, description="Only candidates in this state."),
    sort: str = Query("candidate_id", description=f"One of {', '.join(SORTS)}."),
) -> dict:
    """One page of a campaign's candidates with their energies (the oracle label where
    one exists, else the CHGNet prescreen), the latest surrogate's prediction and its
    uncertainty, and the state. Paged on the server from the campaign's cached table
    (:mod:`alcampaign.serve.table_cache`): only this page is sent."""
    _only(request, {"page", "per_page", "search", "state", "sort"})
    if state is not None and state not in CANDIDATE_STATES:
        raise HTTPException(400, f"state={state!r}: choose one of {', '.join(CANDIDATE_STATES)}")
    if sort not in SORTS:
        raise HTTPException(400, f"sort={sort!r}: choose one of {', '.join(SORTS)}")
    stores = _stores(request)
    doc = _campaign(stores, name, CACHE_KEY_FIELDS)

    def check_page(total: int) -> None:
        n_pages = max(1, math.ceil(total / per_page))
        if page > n_pages:
            raise HTTPException(400, f"page={page}: there are {n_pages} page(s) of {per_page}")

    table = request.app.state.table_cache.page(
        stores,
        doc,
        page=page,
        per_page=per_page,
        search=search,
        state=state,
        sort=sort,
        check_page=check_page,
    )
    return _out(
        request,
        {
            "campaign": name,
            "page": page,
            "per_page": per_page,
            "total": table.total,
            "n_pages": max(1, math.ceil(table.total / per_page)),
            "model_iteration": table.model_iteration,
            "rows": table.rows,
        },
    )


@router.get(
    "/api/dashboard/campaigns/{name}/structures/{candidate_id}.cif",
    tags=["dashboard"],
    response_class=PlainTextResponse,
)
def structure_cif(
    name: str,
    candidate_id: str,
    request: Request,
    relaxed: bool = Query(False, description="The oracle's relaxed structure, not the input."),
) -> PlainTextResponse:
    """A candidate's structure as CIF (the enumerated one, or the oracle's relaxed one)."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    _only(request, {"relaxed"})
    stores = _stores(request)
    doc = _campaign(stores, name, ["name", "config.oracle.fidelity"])
    if relaxed:
        lab = stores.labels.query_one(
            {
                "campaign": name,
                "candidate_id": candidate_id,
                "fidelity": doc["config"]["oracle"]["fidelity"],
                "status": "success",
            },
            ["final_structure"],
        )
        struct = (lab or {}).get("final_structure")
        what = "relaxed structure (no successful label)"
    else:
        cand = stores.candidates.query_one(
            {"campaign": name, "candidate_id": candidate_id}, ["structure"]
        )
        struct = (cand or {}).get("structure")
        what = "candidate"
    if struct is None:
        raise HTTPException(404, f"campaign {name!r} has no {what} {candidate_id!r}")
    text = str(CifWriter(Structure.from_dict(struct)))
    suffix = "_relaxed" if relaxed else ""
    return PlainTextResponse(
        text,
        media_type="chemical/x-cif",
        headers={
            "Content-Disposition": f'attachment; filename="{name}_{candidate_id}{suffix}.cif"'
        },
    )


# -- pages -----------------------------------------------------------------------------


@router.get("/static/plotly.min.js", include_in_schema=False)
def plotly_js() -> FileResponse:
    """plotly.js from the installed plotly package (no CDN)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return FileResponse(path, media_type="application/javascript")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index_page(request: Request) -> HTMLResponse:
    """The campaign list."""
    from alcampaign.serve.pages import INDEX

    page = INDEX.replace("{poll}", str(request.app.state.poll_seconds))
    return HTMLResponse(_with_nonce(page, request))


@router.get("/campaign/{name}", response_class=HTMLResponse, include_in_schema=False)
def campaign_page(name: str, request: Request) -> HTMLResponse:
    """One campaign: numbers, plots, decisions, acquisitions, candidate table."""
    from alcampaign.serve.pages import CAMPAIGN

    _campaign(_stores(request), name, ["name"])
    page = CAMPAIGN.replace("{poll}", str(request.app.state.poll_seconds))
    page = page.replace("{name}", html.escape(name, quote=True))
    return HTMLResponse(_with_nonce(page, request))


def _with_nonce(page: str, request: Request) -> str:
    """The page with this response's CSP nonce on each ``<script>`` (inline scripts
    run only with it)."""
    return page.replace("<script", f'<script nonce="{csp_nonce(request)}"')
