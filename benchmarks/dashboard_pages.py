"""Server-side paging of the dashboard's candidate table over a big campaign.

Fills a campaign with N synthetic candidates shaped like real ones (a 16-atom
structure dict, 32 features, a prescreen energy) in the embedded store (montydb) and
in a MemoryStore (mongomock), then times the dashboard's candidate route through the
HTTP client: first, middle and last page, sorted by id and by CHGNet energy, and a
filtered search. Prints JSON. Usage: ``python benchmarks/dashboard_pages.py [N] [memory,monty]``
(default 100,000 on both; each montydb page takes about a minute at that size).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _docs(n: int, rng: np.random.Generator):
    species = ["Cu", "Au"]
    for i in range(n):
        sites = [
            {"species": [{"element": species[(i >> k) & 1], "occu": 1}], "abc": [k / 16, 0, 0]}
            for k in range(16)
        ]
        yield {
            "campaign": "big",
            "candidate_id": f"{i:016x}",
            "formula": ["CuAu", "Cu3Au", "CuAu3"][i % 3],
            "n_sites": 16,
            "state": "pool",
            "prescreen": {"energy_per_atom": float(rng.normal())},
            "features": rng.normal(size=32).tolist(),
            "structure": {"lattice": {"matrix": np.eye(3).tolist()}, "sites": sites},
        }


def _fill(stores, n: int) -> float:
    rng = np.random.default_rng(0)
    stores.create_campaign("big", {"oracle": {"fidelity": "emt"}})
    t0 = time.perf_counter()
    batch = []
    for doc in _docs(n, rng):
        batch.append(doc)
        if len(batch) == 5000:
            stores.candidates._collection.insert_many(batch)
            batch = []
    if batch:
        stores.candidates._collection.insert_many(batch)
    return time.perf_counter() - t0


def _time(client, n: int) -> dict:
    base = "/api/dashboard/campaigns/big/candidates"
    last = -(-n // 50)
    cases = {
        "page 1 by id": {"page": 1},
        "middle page by id": {"page": last // 2},
        "last page by id": {"page": last},
        "page 1 by CHGNet energy": {"page": 1, "sort": "chgnet_energy"},
        "search 'Cu3' page 2": {"page": 2, "search": "Cu3"},
    }
    out = {}
    for label, params in cases.items():
        t0 = time.perf_counter()
        r = client.get(base, params={"per_page": 50, **params})
        assert r.status_code == 200, r.text
        out[label] = round(time.perf_counter() - t0, 3)
    return out


def main(n: int = 100_000, backends: tuple[str, ...] = ("memory", "monty")) -> dict:
    from fastapi.testclient import TestClient

    from alcampaign.api import create_app
    from alcampaign.config import embedded_store_spec
    from alcampaign.stores import CampaignStores, job_store_from_spec, load_job_store

    results = {"n_candidates": n, "per_page": 50, "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "memory":
                job_store = load_job_store(ROOT / "stores" / "memory.yaml")
            else:
                job_store = job_store_from_spec(embedded_store_spec(Path(tmp)))
            job_store.connect()
            stores = CampaignStores.from_job_store(job_store)
            fill = _fill(stores, n)
            timings = _time(TestClient(create_app(stores)), n)
            results["seconds"][backend] = {"fill": round(fill, 1), **timings}
            print(json.dumps({backend: results["seconds"][backend]}), file=sys.stderr)
    return results


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    backends = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("memory", "monty")
    print(json.dumps(main(n, backends), indent=1))
