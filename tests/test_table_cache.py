"""The dashboard's in-memory candidate table (alcampaign/table_cache.py).

Pages, search, state filter and sort served from memory must equal the same query run
on the candidates collection; the table must follow a running campaign (new labels,
questions, candidates and models show on the next request); and it stays bounded.
"""

from __future__ import annotations

import math
import re
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from alcampaign.serve.api import create_app
from alcampaign.serve.dashboard import SORTS
from alcampaign.serve.table_cache import CandidateTableCache
from alcampaign.store.facade import (
    CANDIDATE_STATES,
    CampaignStores,
    acquisition_entry,
    now,
)

DASH = "/api/dashboard/campaigns"
N = 3000
N_FEATURES = 6
FORMULAS = {"CuAu": (2, 2), "Cu3Au": (3, 1), "CuAu3": (1, 3), "Cu": (4, 0)}


def posterior(model: dict, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closed form of a stored Bayesian linear posterior: ``x.m + offset`` and
    ``sqrt(x C x + 1/beta)``."""
    X = np.atleast_2d(X)
    cov = np.array(model["covariance"])
    var = np.einsum("ij,jk,ik->i", X, cov, X) + 1.0 / model["beta"]
    return X @ np.array(model["mean"]) + model["offset"], np.sqrt(var)


def _candidates(name: str, lo: int, hi: int, rng) -> list[dict]:
    docs = []
    for i in range(lo, hi):
        formula = list(FORMULAS)[i % 4]
        cu, au = FORMULAS[formula]
        k = 1 + i % 3  # 4, 8 or 12 atoms
        energy = None if i % 17 == 0 else float(np.round(rng.normal(), 2))  # ties and gaps
        docs.append(
            {
                "campaign": name,
                # not in insertion order, so sorting is tested
                "candidate_id": f"{(i * 7919) % 100_003:06x}{i:05d}",
                "formula": formula,
                "composition": {"Cu": float(cu * k), **({"Au": float(au * k)} if au else {})},
                "n_sites": 4 * k,
                "state": "pool",
                "acquisition": None,
                "prescreen": None if energy is None else {"energy_per_atom": energy},
                "features": rng.normal(size=N_FEATURES).tolist(),
            }
        )
    return docs


def _insert(stores: CampaignStores, name: str, docs: list[dict], blocks: bool) -> None:
    """Candidates, and their blocks as enumeration and prescreen write them."""
    stores.candidates._collection.insert_many([dict(d) for d in docs])
    if not blocks:
        return
    ids = [d["candidate_id"] for d in docs]
    stores.write_block(name, "features", ids, [d["features"] for d in docs])
    comp = [[d["composition"].get("Au", 0.0), d["composition"]["Cu"]] for d in docs]
    stores.write_block(name, "composition", ids, comp, ["Au", "Cu"])
    energy = [[(d["prescreen"] or {}).get("energy_per_atom", math.nan)] for d in docs]
    stores.write_block(name, "prescreen_energy", ids, energy)


def _label(stores, name: str, cid: str, ok: bool = True, energy: float = -1.0) -> None:
    stores.add_labels(
        [
            {
                "campaign": name,
                "candidate_id": cid,
                "fidelity": "emt",
                "status": "success" if ok else "failed",
                "energy_per_atom": energy if ok else None,
                "iteration": 1,
                "time": now(),
            }
        ]
    )
    stores.set_state(name, [cid], "labelled" if ok else "failed")


def _campaign(memory_store, blocks: bool, name: str = "big") -> tuple[CampaignStores, list]:
    """A campaign of N candidates with questions (open and answered), labels (good and
    failed), an external question, and a model; the candidates' mirror is consistent."""
    stores = CampaignStores.from_job_store(memory_store)
    if not blocks:
        stores.blocks = None
    rng = np.random.default_rng(1)
    fields = {"acquisitions": [], "prescreen": {"energy_min": -3.0}} if blocks else {}
    stores.create_campaign(name, {"oracle": {"fidelity": "emt"}}, **fields)
    docs = _candidates(name, 0, N, rng)
    _insert(stores, name, docs, blocks)
    ids = sorted(d["candidate_id"] for d in docs)
    asked = [
        acquisition_entry(cid, "emt", 1 + k % 3, "max_sigma", float(k), external=k % 10 == 9)
        for k, cid in enumerate(ids[5:300:7])
    ]
    stores.record_acquisitions(name, asked)
    stores.mirror_acquisitions(name, asked)
    for k, a in enumerate(asked[:25]):
        _label(stores, name, a["candidate_id"], ok=k % 5 != 0, energy=-1.0 - k / 100)
    a = rng.normal(size=(N_FEATURES, N_FEATURES))
    stores.add_model(
        {
            "campaign": name,
            "iteration": 3,
            "featurizer": {"kind": "cluster"},
            "mean": rng.normal(size=N_FEATURES).tolist(),
            "covariance": (a @ a.T).tolist(),
            "offset": -2.0,
            "beta": 100.0,
        }
    )
    return stores, docs


def _direct(stores, name, page, per_page, search=None, state=None, sort="candidate_id"):
    """The query the route ran before the cache: filter, sort, skip/limit."""
    criteria: dict = {"campaign": name}
    if state:
        criteria["state"] = state
    if search:
        pattern = re.escape(search.strip())
        criteria["$or"] = [
            {"formula": {"$regex": pattern}},
            {"candidate_id": {"$regex": "^" + pattern}},
        ]
    coll = stores.candidates._collection
    total = coll.count_documents(criteria)
    cursor = coll.find(criteria, {"_id": 0}).sort(SORTS[sort])
    docs = list(cursor.skip((page - 1) * per_page).limit(per_page))
    return total, docs


CASES = [
    {"page": 1, "per_page": 50},
    {"page": 60, "per_page": 50},  # the last page
    {"page": 7, "per_page": 100, "sort": "chgnet_energy"},  # missing energies first
    {"page": 1, "per_page": 200, "sort": "chgnet_energy"},
    {"page": 3, "per_page": 37, "sort": "formula"},
    {"page": 5, "per_page": 41, "sort": "n_sites"},
    {"page": 1, "per_page": 500, "sort": "state"},
    {"page": 2, "per_page": 5, "sort": "state", "state": "acquired"},
    {"page": 1, "per_page": 50, "state": "labelled"},
    {"page": 1, "per_page": 50, "state": "failed", "sort": "chgnet_energy"},
    {"page": 1, "per_page": 50, "state": "requested"},
    {"page": 4, "per_page": 25, "search": "Au3"},
    {"page": 2, "per_page": 25, "search": " Cu3", "sort": "n_sites"},
    {"page": 2, "per_page": 10, "search": "01"},  # start of an id
    {"page": 1, "per_page": 50, "search": "Cu", "state": "pool", "sort": "formula"},
]


@pytest.mark.parametrize("blocks", [True, False], ids=["from-blocks", "from-candidates"])
def test_pages_equal_a_direct_query(memory_store, blocks):
    stores, _ = _campaign(memory_store, blocks)
    app = create_app(stores)
    client = TestClient(app)
    model = stores.latest_model("big")
    labels = {lab["candidate_id"]: lab for lab in stores.get_labels("big")}
    for case in CASES:
        body = client.get(f"{DASH}/big/candidates", params=case).json()
        total, docs = _direct(stores, "big", **case)
        assert body["total"] == total > 0, case
        assert body["n_pages"] == max(1, math.ceil(total / case["per_page"]))
        assert [r["candidate_id"] for r in body["rows"]] == [d["candidate_id"] for d in docs], case
        for r, d in zip(body["rows"], docs, strict=True):
            assert (r["formula"], r["n_sites"], r["state"]) == (
                d["formula"],
                d["n_sites"],
                d["state"],
            )
            chgnet = (d["prescreen"] or {}).get("energy_per_atom")
            assert r["chgnet_energy"] == chgnet
            lab = labels.get(d["candidate_id"])
            if lab and lab["status"] == "success":
                assert r["energy_per_atom"] == lab["energy_per_atom"]
                assert r["energy_source"] == "emt" and r["relaxed"]
            else:
                assert r["energy_per_atom"] == chgnet and not r["relaxed"]
            acq = d.get("acquisition") or {}
            assert (r["iteration"], r["rule"], r["score"]) == (
                acq.get("iteration"),
                acq.get("rule"),
                acq.get("score"),
            )
            mean, std = posterior(model, np.array([d["features"]]))
            assert r["predicted"] == pytest.approx(mean[0]) and r["sigma"] == pytest.approx(std[0])
        assert body["model_iteration"] == 3
    assert app.state.table_cache.builds == 1
    assert (
        client.get(f"{DASH}/big/candidates", params={"page": 61, "per_page": 50}).status_code == 400
    )


@pytest.mark.parametrize("blocks", [True, False], ids=["from-blocks", "from-candidates"])
def test_running_campaign_shows_on_the_next_request(memory_store, blocks):
    stores, _ = _campaign(memory_store, blocks)
    app = create_app(stores)
    client = TestClient(app)

    def get(**params):
        return client.get(f"{DASH}/big/candidates", params={"per_page": 500, **params}).json()

    labelled = get(state="labelled")["total"]
    pool = [r["candidate_id"] for r in get(state="pool")["rows"]]
    # A new label and its state change.
    _label(stores, "big", pool[0], energy=-7.0)
    after = get(state="labelled")
    assert after["total"] == labelled + 1
    row = next(r for r in after["rows"] if r["candidate_id"] == pool[0])
    assert row["energy_per_atom"] == -7.0 and row["energy_source"] == "emt"
    # A failed answer whose state the candidate does not mirror yet (ingest stores the
    # label first): the label is the truth.
    stores.add_labels(
        [
            {
                "campaign": "big",
                "candidate_id": pool[1],
                "fidelity": "emt",
                "status": "failed",
                "energy_per_atom": None,
                "time": now(),
            }
        ]
    )
    assert pool[1] in {r["candidate_id"] for r in get(state="failed")["rows"]}
    # A question recorded but not mirrored yet (the launch job mirrors it later).
    stores.record_acquisitions("big", [acquisition_entry(pool[2], "emt", 4, "ucb", 9.5)])
    acquired = {r["candidate_id"]: r for r in get(state="acquired", sort="state")["rows"]}
    assert acquired[pool[2]]["iteration"] == 4 and acquired[pool[2]]["rule"] == "ucb"
    if blocks:  # labels and questions change the overlay, not the snapshot
        assert app.state.table_cache.builds == 1
    # New candidates (enumeration writes candidates, then blocks, then the campaign).
    new = _candidates("big", N, N + 10, np.random.default_rng(5))
    _insert(stores, "big", new, blocks)
    stores.update_campaign("big", {"enumeration": {"n_candidates": N + 10}})
    assert get()["total"] == N + 10
    cid = new[3]["candidate_id"]
    found = get(search=cid[:11])["rows"]
    assert [r["candidate_id"] for r in found] == [cid] and found[0]["n_sites"] == new[3]["n_sites"]
    # A new model: new predictions.
    model = {**stores.latest_model("big"), "iteration": 4, "offset": 5.0}
    stores.add_model(model)
    page = get(search=cid[:11])
    assert page["model_iteration"] == 4
    mean, _ = posterior(model, np.array([new[3]["features"]]))
    assert page["rows"][0]["predicted"] == pytest.approx(mean[0])


def test_cache_keeps_a_few_campaigns_and_builds_once_under_threads(memory_store):
    stores, _ = _campaign(memory_store, blocks=True, name="a")
    for name in ("b", "c"):
        stores.create_campaign(name, {"oracle": {"fidelity": "emt"}}, acquisitions=[])
        _insert(stores, name, _candidates(name, 0, 50, np.random.default_rng(2)), True)
    app = create_app(stores, cached_campaigns=2)
    cache: CandidateTableCache = app.state.table_cache
    client = TestClient(app)
    for name in ("a", "b", "c"):
        assert client.get(f"{DASH}/{name}/candidates").status_code == 200
    assert list(cache._entries) == ["b", "c"] and cache.builds == 3
    # Concurrent first requests of one campaign build its table once.
    results, errors = [], []

    def fetch():
        try:
            results.append(client.get(f"{DASH}/a/candidates", params={"page": 2}).json())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and cache.builds == 4
    assert all(r["rows"] == results[0]["rows"] for r in results)
    with pytest.raises(ValueError, match="at least one"):
        CandidateTableCache(0)


def test_states_are_the_candidate_states(memory_store):
    """Every state the overlay derives is one the route accepts as a filter."""
    stores, _ = _campaign(memory_store, blocks=True)
    client = TestClient(create_app(stores))
    rows = client.get(f"{DASH}/big/candidates", params={"per_page": 500, "sort": "state"})
    seen = {r["state"] for r in rows.json()["rows"]}
    assert seen <= set(CANDIDATE_STATES)
