"""The campaign collections on MemoryStore and MontyStore."""

import pytest

from alcampaign.config import embedded_store_spec
from alcampaign.stores import CampaignStores, job_store_from_spec


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
    ids, X, docs = stores.feature_block("c")
    assert ids == [f"id{i:03d}" for i in range(7)]
    assert X.shape == (7, 2) and X[3, 1] == 3.0 and {d["state"] for d in docs} == {"pool"}
    stores.update_candidates("c", {i: {"prescreen": {"embedding": [2.0, 1.0, 0.0]}} for i in ids})
    _, E, _ = stores.feature_block("c", "prescreen.embedding")
    assert E.shape == (7, 3)


def test_acquisitions_and_updates(stores):
    stores.insert_candidates("c", _cands(4))
    stores.record_acquisitions("c", ["id001", "id003"], 2, "max_variance", [0.5, 0.25])
    table = {d["candidate_id"]: d for d in stores.candidate_table("c", ["state", "acquisition"])}
    assert table["id001"]["state"] == "acquired"
    assert table["id003"]["acquisition"]["score"] == 0.25
    assert table["id000"]["state"] == "pool"
    stores.set_state("c", ["id001"], "labelled")
    stores.update_candidates("c", {"id000": {"prescreen": {"energy_per_atom": -1.0}}})
    assert len(stores.candidate_table("c", ["state"], {"prescreen": None})) == 3
    with pytest.raises(ValueError):
        stores.set_state("c", ["id001"], "weird")
    stores.record_acquisitions("c", ["id000"], 3, "cost_aware", [1.0], cheap=True)
    doc = stores.candidate_table("c", ["state", "cheap_state"], {"candidate_id": "id000"})[0]
    assert doc["state"] == "pool" and doc["cheap_state"] == "acquired"


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
