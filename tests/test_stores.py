"""The campaign collections on MemoryStore and MontyStore."""

import pytest

from alcampaign.config import embedded_store_spec
from alcampaign.store.facade import CampaignStores, acquisition_entry, job_store_from_spec


@pytest.fixture(params=["memory", "monty"])
def stores(request, memory_store, tmp_path):
    if request.param == "memory":
        js = memory_store
    else:
        js = job_store_from_spec(embedded_store_spec(tmp_path))
        js.connect()
    return CampaignStores.from_job_store(js)


def _cands(n, campaign="c"):
    return [
        {
            "campaign": campaign,
            "candidate_id": f"id{i:03d}",
            "features": [1.0, float(i)],
            "state": "pool",
            "prescreen": None,
        }
        for i in range(n)
    ]


def test_candidates_inserted_once_and_read_as_block(stores):
    assert stores.insert_candidates("c", _cands(5)) == 5
    assert stores.insert_candidates("c", _cands(7)) == 2
    assert stores.insert_candidates("other", _cands(3, "other")) == 3
    ids, X, _ = stores.read_block("c", "features")
    assert ids == [f"id{i:03d}" for i in range(7)]
    assert X.shape == (7, 2) and X[3, 1] == 3.0
    assert stores.blocks.count({"campaign": "c", "kind": "features"}) == 2  # two inserts
    # A block missing from the blocks store is rebuilt from the candidates, once.
    stores.update_candidates("c", {i: {"prescreen": {"embedding": [2.0, i[-1], 0.0]}} for i in ids})
    eids, E, _ = stores.read_block("c", "embedding")
    assert eids == ids and E.shape == (7, 3) and E[4, 1] == 4.0
    assert stores.blocks.count({"campaign": "c", "kind": "embedding"}) == 1


def test_blocks_are_chunked_sorted_and_aligned(stores, monkeypatch):
    import alcampaign.store.facade as mod

    monkeypatch.setattr(mod, "BLOCK_ROWS", 3)
    docs = [
        {**d, "composition": {"Cu": 1.0, "Au": float(i)} if i % 2 else {"Cu": 2.0}}
        for i, d in enumerate(_cands(8))
    ]
    stores.insert_candidates("c", docs[::-1])  # stored in reverse, read sorted
    assert stores.blocks.count({"campaign": "c", "kind": "features"}) == 3
    ids, X, _ = stores.read_block("c", "features")
    assert ids == sorted(ids) and X[:, 1].tolist() == list(range(8))
    cids, C, columns = stores.read_block("c", "composition")
    assert cids == ids and columns == ["Au", "Cu"]
    assert C[3].tolist() == [3.0, 1.0] and C[2].tolist() == [0.0, 2.0]
    # A rerun after a crash between the candidate and block writes completes the block.
    stores.delete_block("c", "features")
    stores.insert_candidates("c", docs[:2])
    assert stores.read_block("c", "features")[0] == ["id000", "id001"]


def test_acquisitions_are_recorded_in_the_campaign_and_mirrored(stores):
    stores.insert_candidates("c", _cands(4))
    stores.create_campaign("c", {})
    entries = [
        acquisition_entry("id001", "emt", 2, "max_variance", 0.5),
        acquisition_entry("id003", "emt", 2, "max_variance", 0.25, external=True),
        acquisition_entry("id000", "chgnet", 3, "cost_aware", 1.0, cheap=True),
    ]
    stores.record_acquisitions("c", entries, extra={"iteration": 1})
    doc = stores.get_campaign("c")
    assert doc["iteration"] == 1 and len(doc["acquisitions"]) == 3
    assert len(stores.open_acquisitions(doc)) == 3
    label = {"campaign": "c", "candidate_id": "id001", "fidelity": "emt", "status": "success"}
    stores.add_labels([label])
    assert [a["candidate_id"] for a in stores.open_acquisitions(doc)] == ["id003", "id000"]
    stores.mirror_acquisitions("c", entries)
    table = {
        d["candidate_id"]: d
        for d in stores.candidate_table("c", ["state", "cheap_state", "acquisition"])
    }
    assert table["id001"]["state"] == "acquired"
    assert table["id003"]["state"] == "requested"
    assert table["id003"]["acquisition"]["score"] == 0.25
    assert table["id000"]["state"] == "pool" and table["id000"]["cheap_state"] == "acquired"
    assert table["id002"]["state"] == "pool"
    stores.set_state("c", ["id001"], "labelled")
    stores.update_candidates("c", {"id000": {"prescreen": {"energy_per_atom": -1.0}}})
    assert len(stores.candidate_table("c", ["state"], {"prescreen": None})) == 3
    with pytest.raises(ValueError):
        stores.set_state("c", ["id001"], "weird")


def test_lease_is_exclusive_until_released_or_expired(stores):
    stores.create_campaign("c", {})
    assert stores.acquire_lease("c", "a", ttl=60)
    assert stores.acquire_lease("c", "a", ttl=60)  # the holder renews
    assert not stores.acquire_lease("c", "b", ttl=60)
    stores.release_lease("c", "b")  # not b's: nothing happens
    assert not stores.acquire_lease("c", "b", ttl=60)
    stores.release_lease("c", "a")
    assert stores.acquire_lease("c", "b", ttl=-1)  # taken, already expired
    assert stores.acquire_lease("c", "a", ttl=60)
    assert stores.get_campaign("c")["lease"]["owner"] == "a"


def test_labels_are_never_duplicated_or_overwritten(stores):
    lab = {
        "campaign": "c",
        "candidate_id": "id001",
        "fidelity": "emt",
        "energy_per_atom": -1.0,
        "status": "success",
    }
    assert stores.add_labels([lab]) == 1
    assert stores.add_labels([{**lab, "energy_per_atom": 5.0}]) == 0
    assert stores.add_labels([{**lab, "fidelity": "chgnet"}]) == 1
    labels = stores.get_labels("c", "emt")
    assert len(labels) == 1 and labels[0]["energy_per_atom"] == -1.0


def test_campaign_and_models(stores):
    stores.create_campaign("c", {"name": "c"}, parent={"x": 1})
    stores.update_campaign("c", {"state": "stopped"})
    assert stores.get_campaign("c")["state"] == "stopped"
    assert stores.get_campaign("c")["parent"] == {"x": 1}
    assert [d["name"] for d in stores.list_campaigns()] == ["c"]
    assert stores.latest_model("c") is None
    stores.add_model({"campaign": "c", "iteration": 0, "mean": [1.0]})
    stores.add_model({"campaign": "c", "iteration": 1, "mean": [2.0]})
    stores.add_model({"campaign": "c", "iteration": 1, "mean": [3.0]})
    assert stores.latest_model("c")["mean"] == [3.0]
    assert stores.models.count({"campaign": "c"}) == 2
