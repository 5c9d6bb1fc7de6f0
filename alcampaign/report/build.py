"""Campaign reports: PNG plots, one self-contained HTML page and ``summary.json``.

:func:`~alcampaign.report.collect.collect` reads what a campaign stored;
:mod:`alcampaign.report.plots` draws one figure per plot (matplotlib, Agg);
:func:`write_report` writes them as PNG, embeds them in ``index.html``
(:mod:`alcampaign.report.html`) and writes the numbers it shows to ``summary.json``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from alcampaign.report import html
from alcampaign.report.collect import (
    CampaignData,
    PoolPredictions,
    calibration_curve,
    collect,
    hull_table,
    pool_predictions,
    summary,
)
from alcampaign.report.plots import PLOTS, figures

__all__ = [
    "PLOTS",
    "CampaignData",
    "PoolPredictions",
    "calibration_curve",
    "collect",
    "hull_table",
    "pool_predictions",
    "summary",
    "write_report",
]


def write_report(data: CampaignData, out: Path) -> dict:
    """Write PNG plots, ``index.html`` and ``summary.json`` to ``out``; return the summary
    (with ``plots``, the PNG file names)."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    hull = hull_table(data)  # PhaseDiagram once, for the plot and the summary
    images = {}
    for key, fig in figures(data, hull).items():
        path = out / f"{key}.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        images[key] = base64.b64encode(path.read_bytes()).decode()
    info = summary(data, hull)
    info["plots"] = sorted(f"{k}.png" for k in images)
    (out / "summary.json").write_text(json.dumps(info, indent=1, default=str))
    (out / "index.html").write_text(html.page(data.doc, info, images, data.acquisitions))
    return info
