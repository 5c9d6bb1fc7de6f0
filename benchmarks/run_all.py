"""Run every benchmark, save their JSON, and refresh the table in docs/benchmarks.md.

Usage::

    python benchmarks/run_all.py            # a few minutes; --quick for a smoke run

Each benchmark runs in its own process (``python benchmarks/<name>.py``) and prints
JSON; all of it goes to ``benchmarks/results.json``, and the summary table between the
``run_all`` markers of ``docs/benchmarks.md`` is rewritten.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
START, END = "<!-- run_all:start -->", "<!-- run_all:end -->"


def run(script: str, *args: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,
    )
    text = proc.stdout
    data = json.loads(text[text.index("{") : text.rindex("}") + 1])
    data["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return data


def table(results: dict) -> str:
    rows = []
    p = results["prescreen"]
    rows.append(
        (
            "CHGNet prescreen vs per-structure loop",
            f"{p['speedup_with_forces']}x with forces, stress, magmoms, embeddings; "
            f"{p['speedup_energies_only']}x energies only",
            ">= 5x",
            "no" if not p["target_5x"] else "yes",
        )
    )
    d = results["d_optimal"]
    rows.append(
        (
            f"greedy D-optimal, k={d['k']} of N={d['N']}, d={d['d']}",
            f"{d['seconds']['rank_one']} s; {d['speedup_vs_naive']}x naive",
            "< 1 s, >= 100x",
            "yes" if all(d["targets"].values()) else "no",
        )
    )
    e = results["data_efficiency"]
    s = e["summary"]
    best_gs = min(
        (r for r in s if r != "random"), key=lambda r: s[r]["ground_states"]["mean_calls"]
    )
    rows.append(
        (
            "data efficiency: calls to all ground states",
            f"{best_gs} {s[best_gs]['ground_states']['mean_calls']:.1f} vs random "
            f"{s['random']['ground_states']['mean_calls']:.1f}",
            "<= half of random",
            "yes"
            if s[best_gs]["ground_states"]["mean_calls"]
            <= 0.5 * s["random"]["ground_states"]["mean_calls"]
            else "no",
        )
    )
    rows.append(
        (
            "data efficiency: calls to RMSE target",
            f"{e['best_rule_for_rmse']} {s[e['best_rule_for_rmse']]['rmse']['mean_calls']:.1f}"
            f" vs random {s['random']['rmse']['mean_calls']:.1f}",
            "<= half of random",
            "yes" if e["best_over_random_calls"] <= 0.5 else "no",
        )
    )
    st = results["stores"]
    ratio = st["backends"]["monty_over_memory"]
    rows.append(
        (
            f"embedded vs MongoDB code path ({st['backends']['n_candidates']} candidates)",
            ", ".join(f"{k} {v}x" for k, v in ratio.items()),
            "(comparison)",
            "—",
        )
    )
    for c in st["controller"]:
        rows.append(
            (
                f"controller decision, {c['n_candidates']} candidates (embedded)",
                f"{c['decision_seconds']} s (then the launch job, off the decision path: "
                f"{c['launch_seconds']} s)",
                "< 2 s at 100,000",
                "yes" if c["target_under_2s"] else "no",
            )
        )
    lines = ["| benchmark | result | target | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {m} |" for a, b, c, m in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    q = args.quick
    results = {
        "machine": {"python": platform.python_version(), "cpus": platform.machine()},
        "prescreen": run("prescreen.py", "--n", "24" if q else "64"),
        "d_optimal": run("d_optimal.py", *(["--quick"] if q else [])),
        "data_efficiency": run("data_efficiency.py", "--seeds", "2" if q else "5"),
        "stores": run(
            "stores.py",
            "--n",
            "500" if q else "2000",
            "--controller-n",
            *(["2000"] if q else ["2000", "20000", "100000"]),
        ),
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    block = (
        f"{START}\n{table(results)}\n\n(`python benchmarks/run_all.py`{' --quick' if q else ''}, "
        f"{time.strftime('%Y-%m-%d')}; JSON in `benchmarks/results.json`)\n{END}"
    )
    text = DOC.read_text()
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.replace("\n", f"\n\n## Summary (run_all)\n\n{block}\n", 1)
    DOC.write_text(text)
    print(table(results))


if __name__ == "__main__":
    main()
