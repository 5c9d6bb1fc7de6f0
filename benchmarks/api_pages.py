"""``/api/candidates/`` pages at 100,000 candidates: from the table against the collection.

Fills a campaign as :mod:`benchmarks.dashboard_pages` does (synthetic candidates shaped
like real ones, the features/composition/prescreen-energy blocks, a model) in the
embedded store (montydb), then times pages of the collection API through the HTTP
client, side by side:

* **table**: a campaign and the default fields (answered from the dashboard's cached
  table): the cold first page (builds the table), then warm pages: first, middle and
  last by id, sorted by ``-n_sites``, a ``formula`` filter, a ``state`` filter, a
  page after a new label;
* **collection**: the same first page with a field the table lacks (``structure``),
  read from the collection (one projected, sorted, capped query: a scan on montydb),
  only at sizes up to ``--scan-max`` (default 20,000) as it takes minutes beyond.

Prints JSON lines, then one summary object. Usage:
``python benchmarks/api_pages.py [N[,N...]] [monty|memory]`` (default ``100000 monty``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashboard_pages import ROOT, _fill, _label

SCAN_MAX = 20_000
API = "/api/candidates/"


def _get(client, params: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = client.get(API, params=params)
    dt = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return round(dt, 3), r.json()


def _time(client, stores, n: int) -> dict:
    base = {"campaign": "big", "_per_page": 50}
    last = -(-n // 50)
    out = {}
    out["table: cold page 1 (builds the table)"], body = _get(client, {**base, "_page": 1})
    assert body["meta"]["source"] == "table" and body["meta"]["total_doc"] == n
    cases = {
        "table: page 1 by id": {"_page": 1},
        "table: middle page by id": {"_page": last // 2},
        "table: last page by id": {"_page": last},
        "table: page 2 by -n_sites,formula": {"_page": 2, "_sort_fields": "-n_sites,formula"},
        "table: formula=Cu3Au page 3": {"_page": 3, "formula": "Cu3Au"},
        "table: state=pool page 3": {"_page": 3, "state": "pool"},
    }
    for label, params in cases.items():
        out[label], _ = _get(client, {**base, **params})
    cid = f"{n // 2:016x}"
    _label(stores, cid)
    out["table: page after a new label"], body = _get(client, {**base, "state": "labelled"})
    assert [d["candidate_id"] for d in body["data"]] == [cid], body
    if n <= SCAN_MAX:
        out["collection: page 1 with structure"], body = _get(
            client, {**base, "_page": 1, "_fields": "candidate_id,structure"}
        )
        assert body["meta"]["source"] == "collection"
    return out


def main(sizes=(100_000,), backend: str = "monty") -> dict:
    from fastapi.testclient import TestClient

    from alcampaign.config import embedded_store_spec
    from alcampaign.serve.api import create_app
    from alcampaign.store.facade import CampaignStores, job_store_from_spec, load_job_store

    results: dict = {"per_page": 50, "backend": backend, "seconds": {}}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "memory":
                job_store = load_job_store(ROOT / "stores" / "memory.yaml")
            else:
                job_store = job_store_from_spec(embedded_store_spec(Path(tmp)))
            job_store.connect()
            stores = CampaignStores.from_job_store(job_store)
            fill = _fill(stores, n)
            client = TestClient(create_app(stores), base_url="http://127.0.0.1")
            timings = {"fill": round(fill, 1), **_time(client, stores, n)}
            warm = [v for k, v in timings.items() if k.startswith("table:") and "cold" not in k]
            timings["table: slowest warm page"] = max(warm)
            results["seconds"][f"{backend} {n}"] = timings
            print(json.dumps({f"{backend} {n}": timings}), flush=True)
    return results


if __name__ == "__main__":
    sizes = tuple(int(s) for s in sys.argv[1].split(",")) if len(sys.argv) > 1 else (100_000,)
    backend = sys.argv[2] if len(sys.argv) > 2 else "monty"
    print(json.dumps(main(sizes, backend)))
