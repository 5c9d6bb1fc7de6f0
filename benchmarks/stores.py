"""Campaign stores: the embedded database against the MongoDB code path, and the
controller's decision time as the pool grows.

* ``backends``: the same operations (insert N candidates, read the feature block, 200
  per-candidate updates, record acquisitions, add labels) on maggma's ``MontyStore``
  (the embedded default) and ``MemoryStore`` (mongomock: the MongoDB code path, with
  ``bulk_write``).
* ``controller``: one controller decision (read the feature block and the labels, fit,
  cross-validate, judge, select a batch, record it) on an embedded store holding N
  candidates with 30 labels; the issue's target is under 2 s at N = 100,000. The
  launch job that follows (off the decision path: it mirrors the acquisitions onto
  their candidates and reads their structures for the oracles) is timed beside it.

Usage: ``python benchmarks/stores.py [--n 2000] [--controller-n 2000 20000 100000]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _candidate(i: int, d: int, rng) -> dict:
    structure = {
        "@module": "pymatgen.core.structure",
        "@class": "Structure",
        "lattice": {"matrix": [[3.6, 0, 0], [0, 3.6, 0], [0, 0, 3.6]]},
        "sites": [
            {"species": [{"element": "Cu", "occu": 1}], "abc": [0.25 * k, 0, 0], "label": "Cu"}
            for k in range(4)
        ],
    }
    return {
        "campaign": "bench",
        "candidate_id": f"{i:012d}",
        "structure": structure,
        "formula": "Cu",
        "composition": {"Cu": 4.0},
        "n_sites": 4,
        "features": [1.0, *rng.uniform(-1, 1, d - 1).tolist()],
        "prescreen": None,
        "state": "pool",
        "acquisition": None,
    }


def _stores(kind: str, home: Path):
    from alcampaign.config import embedded_store_spec
    from alcampaign.store.facade import CampaignStores, job_store_from_spec, load_job_store

    root = Path(__file__).resolve().parents[1]
    js = (
        job_store_from_spec(embedded_store_spec(home))
        if kind == "monty"
        else load_job_store(root / "stores" / "memory.yaml")
    )
    js.connect()
    return js, CampaignStores.from_job_store(js)


def backends(n: int, d: int = 16) -> dict:
    from alcampaign.store.facade import acquisition_entry

    rng = np.random.default_rng(0)
    docs = [_candidate(i, d, rng) for i in range(n)]
    out = {}
    for kind in ("monty", "memory"):
        with tempfile.TemporaryDirectory() as tmp:
            _, stores = _stores(kind, Path(tmp))
            t = {}
            t0 = time.perf_counter()
            stores.insert_candidates("bench", docs)
            t["insert_candidates"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            stores.read_block("bench", "features")
            t["read_feature_block"] = time.perf_counter() - t0
            ids = [doc["candidate_id"] for doc in docs[:200]]
            t0 = time.perf_counter()
            stores.update_candidates(
                "bench", {c: {"prescreen": {"energy_per_atom": -1.0}} for c in ids}
            )
            t["update_200_candidates"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            stores.create_campaign("bench", {})
            stores.record_acquisitions(
                "bench", [acquisition_entry(c, "emt", 1, "max_variance", 1.0) for c in ids[:10]]
            )
            t["record_10_acquisitions"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            stores.mirror_acquisitions("bench", stores.get_campaign("bench")["acquisitions"])
            t["mirror_10_acquisitions"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            stores.add_labels(
                [
                    {
                        "campaign": "bench",
                        "candidate_id": c,
                        "fidelity": "emt",
                        "status": "success",
                        "energy_per_atom": -1.0,
                    }
                    for c in ids[:10]
                ]
            )
            t["add_10_labels"] = time.perf_counter() - t0
            out[kind] = {k: round(v, 4) for k, v in t.items()}
    return {
        "n_candidates": n,
        "seconds": out,
        "monty_over_memory": {
            k: round(out["monty"][k] / max(out["memory"][k], 1e-4), 2) for k in out["monty"]
        },
    }


def controller_time(n: int, d: int = 16) -> dict:
    """Seconds for one controller decision with n candidates in the embedded store."""
    from alcampaign.campaign.jobs import controller

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        js, stores = _stores("monty", Path(tmp))
        config = {
            "name": "bench",
            "system": {"structure": "/unused.cif"},
            "acquisition": {"rule": "max_variance", "batch_size": 5},
            "stopping": {"max_oracle_calls": 1000, "rmse_target": 1e-9},
        }
        stores.create_campaign("bench", config)
        t0 = time.perf_counter()
        # One call, as the enumeration job makes it.
        stores.insert_candidates("bench", [_candidate(i, d, rng) for i in range(n)])
        t_insert = time.perf_counter() - t0
        ids = [f"{i:012d}" for i in rng.choice(n, 30, replace=False)]
        stores.add_labels(
            [
                {
                    "campaign": "bench",
                    "candidate_id": c,
                    "fidelity": "oracle",
                    "status": "success",
                    "energy_per_atom": float(rng.normal()),
                    "cost": 1.0,
                }
                for c in ids
            ]
        )
        t0 = time.perf_counter()
        response = controller("bench", 0).run(js)
        t_decision = time.perf_counter() - t0
        # The launch job (off the decision path): mirror the 5 acquisitions onto their
        # candidates and read their structures for the oracle jobs.
        (launch,) = response.addition.jobs
        t0 = time.perf_counter()
        launch.run(js)
        t_launch = time.perf_counter() - t0
    return {
        "n_candidates": n,
        "insert_seconds": round(t_insert, 2),
        "decision_seconds": round(t_decision, 2),
        "launch_seconds": round(t_launch, 2),
        "target_under_2s": t_decision < 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--controller-n", type=int, nargs="*", default=[2000, 20000])
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "benchmark": "stores",
                "backends": backends(args.n),
                "controller": [controller_time(n) for n in args.controller_n],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
