"""The one status record of a campaign (``status --json``, dashboard, report)."""

from __future__ import annotations

from alcampaign.science.stopping import METRIC_NAMES


def status_record(doc: dict) -> dict:
    """The ``status --json`` object of a campaign document."""
    metrics = doc.get("metrics") or {}
    return {
        "name": doc["name"],
        "state": doc.get("state"),
        "iteration": doc.get("iteration", 0),
        "n_oracle_calls": doc.get("n_oracle_calls", 0),
        "stop_reason": doc.get("stop_reason"),
        "metrics": {k: metrics.get(k) for k in (*METRIC_NAMES, "missing_ground_states")},
        "criteria": doc.get("criteria") or [],
        "n_candidates": (doc.get("enumeration") or {}).get("n_candidates"),
        "prescreen": doc.get("prescreen"),
        "updated_at": doc.get("updated_at"),
    }
