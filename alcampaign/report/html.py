"""The report's self-contained HTML page (PNG plots embedded as data URIs)."""

from __future__ import annotations

import html


def _table(rows: list[list], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _head_rows(info: dict) -> list[list]:
    rows = [
        ["state", info["state"]],
        ["iteration", info["iteration"]],
        ["oracle calls", info["n_oracle_calls"]],
        ["cost spent", _fmt(info["cost_spent"])],
        ["candidates", info["n_candidates"]],
        ["failed oracle calls", info["n_failed"]],
        ["stop reason", info["stop_reason"] or "—"],
    ]
    rows += [[f"cv {k}", _fmt(v)] for k, v in info["metrics"].items()]
    rows.append(
        [
            f"ground states ({info.get('hull_method', '')})",
            ", ".join(info.get("ground_states", [])) or "—",
        ]
    )
    closest = info.get("closest_predicted_to_hull")
    if closest:
        rows.append(
            [
                "unlabelled candidate closest to the hull (predicted)",
                f"{closest['candidate_id']}: {1000 * closest['e_above_hull']:.1f} "
                f"± {1000 * closest['std']:.1f} meV/atom",
            ]
        )
    likely = info.get("most_probable_unlabelled_ground_state")
    if likely:
        rows.append(
            [
                "unlabelled candidate most often on the sampled hulls",
                f"{likely['candidate_id']}: P(on hull) {likely['p_on_hull']:.2f}",
            ]
        )
    return rows


def _decision_rows(doc: dict) -> list[list]:
    return [
        [
            h["iteration"],
            h.get("rule") or "—",
            h["n_oracle_calls"],
            _fmt(h["metrics"].get("rmse")),
            len(h.get("acquired") or []),
            ", ".join((h.get("acquired") or [])[:6]),
            h["decision"].get("reason") or ("stop" if h["decision"]["stop"] else "go on"),
        ]
        for h in doc.get("history") or []
    ]


def _acquisition_rows(acquisitions: list[dict]) -> list[list]:
    ordered = sorted(
        acquisitions, key=lambda a: (a.get("iteration") or 0, -(a.get("score") or 0))
    )
    return [
        [
            a.get("iteration"),
            a["candidate_id"],
            a.get("formula"),
            a.get("rule"),
            _fmt(a.get("score")),
            a["state"],
        ]
        for a in ordered
    ]


def page(doc: dict, info: dict, images: dict[str, str], acquisitions: list[dict]) -> str:
    """The HTML page: summary, stopping rules, plots (``images``: name -> base64 PNG),
    decisions and acquisitions."""
    criteria = [
        [c["name"], _fmt(c["value"]), _fmt(c["threshold"]), "yes" if c["met"] else "no", c["kind"]]
        for c in info["criteria"]
    ]
    figures_html = "".join(
        f'<figure><img alt="{k}" src="data:image/png;base64,{v}"><figcaption>{k}</figcaption>'
        f"</figure>"
        for k, v in images.items()
    )
    decisions = _table(
        _decision_rows(doc),
        ["iteration", "rule", "oracle calls", "cv rmse", "asked", "first ids", "decision"],
    )
    acq = _table(
        _acquisition_rows(acquisitions),
        ["iteration", "candidate", "formula", "rule", "score", "state"],
    )
    name = html.escape(doc["name"])
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>alcampaign report: {name}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}figure{{display:inline-block;
margin:0.5em}}img{{max-width:520px}}</style></head><body>
<h1>Campaign {name}</h1>
{_table(_head_rows(info), ["", ""])}
<h2>Stopping rules</h2>{_table(criteria, ["criterion", "value", "threshold", "met", "kind"])}
<h2>Plots</h2>{figures_html}
<h2>Decisions</h2>{decisions}
<h2>Acquisitions</h2>{acq}
</body></html>"""
