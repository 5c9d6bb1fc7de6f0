"""The one status record of a campaign (``status --json``, the dashboard, the report),
and what a running campaign waits for (``status --watch``)."""

from __future__ import annotations

from pathlib import Path

from alcampaign.science.stopping import METRIC_NAMES

# The campaign document's fields that :func:`status_record` reads (a projection for
# callers that read many campaigns at once, such as the dashboard's list).
STATUS_FIELDS = [
    "name",
    "state",
    "iteration",
    "n_oracle_calls",
    "cost_spent",
    "stop_reason",
    "metrics",
    "criteria",
    "enumeration.n_candidates",
    "prescreen",
    "config.system.structure",
    "updated_at",
]
# States in which a campaign does nothing more until someone resumes it.
FINISHED = ("stopped", "failed", "enumerated")


def status_record(doc: dict) -> dict:
    """The ``status --json`` object of a campaign document.

    Keys: ``name``, ``state`` (``running``/``waiting``/``stopped``/``failed``/
    ``enumerated``), ``iteration``, ``n_oracle_calls``, ``cost_spent``, ``stop_reason``,
    ``metrics`` (``rmse``, ``mae`` in eV/atom, ``ece``, ``max_std_residual``; ``None``
    before the first validation), ``criteria`` (each stopping criterion's value,
    threshold and whether it is met), ``n_candidates``, ``prescreen`` (its summary),
    ``system`` (the structure file's stem) and ``updated_at``.
    """
    metrics = doc.get("metrics") or {}
    structure = ((doc.get("config") or {}).get("system") or {}).get("structure")
    return {
        "name": doc["name"],
        "state": doc.get("state"),
        "iteration": doc.get("iteration", 0),
        "n_oracle_calls": doc.get("n_oracle_calls", 0),
        "cost_spent": doc.get("cost_spent"),
        "stop_reason": doc.get("stop_reason"),
        "metrics": {k: metrics.get(k) for k in (*METRIC_NAMES, "missing_ground_states")},
        # Which pool-wide estimate rmse/mae are, with its interval and level.
        "accuracy": metrics.get("accuracy"),
        "criteria": doc.get("criteria") or [],
        "n_candidates": (doc.get("enumeration") or {}).get("n_candidates"),
        "prescreen": doc.get("prescreen"),
        "system": Path(structure).stem if structure else None,
        "updated_at": doc.get("updated_at"),
        "resources": _resources(doc),
    }


def waiting_for(stores, doc: dict) -> str:
    """What a campaign waits for, in words (the live view's last line).

    Read from the campaign document and the labels only (no scan of the candidates),
    so a refresh costs the same at any pool size.
    """
    state = doc.get("state")
    if state in FINISHED:
        return "nothing: the campaign is " + state
    open_ = stores.open_acquisitions(doc)
    requested = sum(bool(a.get("external")) for a in open_)
    asked = len(open_) - requested
    if requested:
        return f"{requested} external answers (alcampaign export / ingest / resume)"
    if asked:
        return f"{asked} oracle jobs to finish"
    return "its next decision"


def _resources(doc: dict) -> dict | None:
    """The thread/process policy a run of this campaign gets here and now."""
    from alcampaign.campaign.resources import resolve
    from alcampaign.config import ConfigError, ResourcesConfig

    try:
        config = ResourcesConfig.model_validate((doc.get("config") or {}).get("resources") or {})
        return resolve(config).as_dict()
    except (ConfigError, ValueError):
        return None
