"""Server-side paging of the dashboard's candidate table over a big campaign.

Fills a campaign with N synthetic candidates shaped like real ones (a 16-atom
structure dict, 32 features, a prescreen energy; the features and composition blocks
written as enumeration writes them), a stored model and a few labels, in the embedded
store (montydb) and/or a MemoryStore (mongomock), then times the dashboard's candidate
route through the HTTP client:

* the **cold** first page (the server builds the campaign's table: one projected query
  of the candidates, the features block, the whole-campaign predictions);
* **warm** pages: first, middle and last by id, by CHGNet energy, by state, a search,
  a state filter;
* the first page after a new label and its state change (the overlay is recomputed,
  the snapshot is not);
* maggma's ``/api/candidates/`` resource (not cached: it queries the collection).

Backends: ``monty`` (embedded), ``memory`` (mongomock); ``monty-scan`` and
``memory-scan`` store no prescreen energy block, as older versions did, so the table is
built from one scan of the candidates instead of the blocks.

Prints JSON. Usage: ``python benchmarks/dashboard_pages.py [N[,N...]] [backends]``
(default ``10000,100000 monty,monty-scan``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_FEATURES = 32


def _docs(lo: int, hi: int, rng: np.random.Generator) -> list[dict]:
    species = ["Cu", "Au"]
    docs = []
    for i in range(lo, hi):
        sites = [
            {"species": [{"element": species[(i >> k) & 1], "occu": 1}], "abc": [k / 16, 0, 0]}
            for k in range(16)
        ]
        n_au = sum((i >> k) & 1 for k in range(16))
        docs.append(
            {
                "campaign": "big",
                "candidate_id": f"{i:016x}",
                "formula": ["CuAu", "Cu3Au", "CuAu3"][i % 3],
                "composition": {"Cu": 16.0 - n_au, "Au": float(n_au)},
                "n_sites": 16,
                "state": "pool",
                "acquisition": None,
                "prescreen": {"energy_per_atom": float(rng.normal())},
                "features": rng.normal(size=N_FEATURES).tolist(),
                "structure": {"lattice": {"matrix": np.eye(3).tolist()}, "sites": sites},
            }
        )
    return docs


def _fill(stores, n: int, energy_block: bool = True) -> float:
    """Candidates and blocks in bulk (``insert_candidates`` checks ids one batch at a
    time, far slower at this size), a model of iteration 1, no labels yet.
    ``energy_block=False``: no prescreen energy block (as stored by older versions),
    so the server must scan the candidates once."""
    from alcampaign.store.facade import now

    rng = np.random.default_rng(0)
    stores.create_campaign(
        "big",
        {"oracle": {"fidelity": "emt"}},
        acquisitions=[],
        prescreen={"n_screened": n, "energy_min": -4.0},
    )
    t0 = time.perf_counter()
    for lo in range(0, n, 5000):
        docs = _docs(lo, min(n, lo + 5000), rng)
        stores.candidates._collection.insert_many(docs)
        ids = [d["candidate_id"] for d in docs]
        stores.write_block("big", "features", ids, [d["features"] for d in docs])
        comp = [[d["composition"]["Au"], d["composition"]["Cu"]] for d in docs]
        stores.write_block("big", "composition", ids, comp, ["Au", "Cu"])
        if energy_block:
            energy = [[d["prescreen"]["energy_per_atom"]] for d in docs]
            stores.write_block("big", "prescreen_energy", ids, energy)
    a = rng.normal(size=(N_FEATURES, N_FEATURES))
    stores.add_model(
        {
            "campaign": "big",
            "iteration": 1,
            "kind": "bayesian_linear",
            "featurizer": {"kind": "cluster"},
            "mean": rng.normal(size=N_FEATURES).tolist(),
            "covariance": (a @ a.T / N_FEATURES).tolist(),
            "offset": -3.0,
            "beta": 1e4,
            "time": now(),
        }
    )
    return time.perf_counter() - t0


def _label(stores, cid: str) -> None:
    """A new answer and its state, as ingest stores them."""
    from alcampaign.store.facade import now

    stores.add_labels(
        [
            {
                "campaign": "big",
                "candidate_id": cid,
                "fidelity": "emt",
                "status": "success",
                "energy_per_atom": -1.5,
                "iteration": 1,
                "time": now(),
            }
        ]
    )
    stores.set_state("big", [cid], "labelled")
    stores.update_counts("big", "emt")


def _get(client, url: str, params: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = client.get(url, params=params)
    dt = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return round(dt, 3), r.json()


def _time(client, stores, n: int) -> dict:
    base = "/api/dashboard/campaigns/big/candidates"
    last = -(-n // 50)
    out = {}
    out["cold page 1 (builds the table)"], _ = _get(client, base, {"page": 1})
    cases = {
        "warm page 1 by id": {"page": 1},
        "warm middle page by id": {"page": last // 2},
        "warm last page by id": {"page": last},
        "warm page 1 by CHGNet energy": {"page": 1, "sort": "chgnet_energy"},
        "warm page 1 by state": {"page": 1, "sort": "state"},
        "warm search 'Cu3' page 2": {"page": 2, "search": "Cu3"},
        "warm state=pool page 3": {"page": 3, "state": "pool"},
    }
    for label, params in cases.items():
        out[label], _ = _get(client, base, {"per_page": 50, **params})
    cid = f"{n // 2:016x}"
    _label(stores, cid)
    out["page after a new label"], body = _get(client, base, {"state": "labelled"})
    assert [r["candidate_id"] for r in body["rows"]] == [cid], body
    out["API /api/candidates/ page 1 (uncached)"], _ = _get(
        client, "/api/candidates/", {"campaign": "big", "_page": 1, "_per_page": 50}
    )
    return out


def main(sizes=(10_000, 100_000), backends: tuple[str, ...] = ("monty", "monty-scan")) -> dict:
    from fastapi.testclient import TestClient

    from alcampaign.config import embedded_store_spec
    from alcampaign.serve.api import create_app
    from alcampaign.store.facade import CampaignStores, job_store_from_spec, load_job_store

    results: dict = {"per_page": 50, "seconds": {}}
    for n in sizes:
        for backend in backends:
            with tempfile.TemporaryDirectory() as tmp:
                if backend.startswith("memory"):
                    job_store = load_job_store(ROOT / "stores" / "memory.yaml")
                else:
                    job_store = job_store_from_spec(embedded_store_spec(Path(tmp)))
                job_store.connect()
                stores = CampaignStores.from_job_store(job_store)
                fill = _fill(stores, n, energy_block=not backend.endswith("-scan"))
                client = TestClient(create_app(stores), base_url="http://127.0.0.1")
                timings = {"fill": round(fill, 1), **_time(client, stores, n)}
                results["seconds"][f"{backend} {n}"] = timings
                print(json.dumps({f"{backend} {n}": timings}), file=sys.stderr)
    return results


if __name__ == "__main__":
    sizes = (
        tuple(int(s) for s in sys.argv[1].split(",")) if len(sys.argv) > 1 else (10_000, 100_000)
    )
    backends = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("monty", "monty-scan")
    print(json.dumps(main(sizes, backends), indent=1))
