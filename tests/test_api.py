"""The read-only HTTP API and the dashboard's JSON routes, through an HTTP client.

A small campaign stored once per session in an embedded (montydb) store; pagination
over a big synthetic collection in a MemoryStore; every bad parameter answered 4xx.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pymatgen.core import Structure
from typer.testing import CliRunner

from alcampaign.cli import app as cli_app
from alcampaign.report.build import collect, hull_table, summary
from alcampaign.serve.api import create_app
from alcampaign.store.facade import CampaignStores, open_stores
from alcampaign.store.readonly import REDACTED, read_only

runner = CliRunner()
DASH = "/api/dashboard/campaigns"
LOCAL = "http://127.0.0.1"  # an allowed Host (TestClient's own "testserver" is refused)


@pytest.fixture(scope="module")
def served(stored_campaign):
    store_file, name = stored_campaign
    stores = open_stores(store_file)[1]
    return TestClient(create_app(stores), base_url=LOCAL), stores, name, store_file


def _snapshot(folder) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- maggma resources ------------------------------------------------------------------


def test_collection_resources(served):
    client, stores, name, _ = served
    n_cands = stores.candidates.count({"campaign": name})
    r = client.get("/api/candidates/", params={"campaign": name, "_page": 1, "_per_page": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["total_doc"] == n_cands and len(body["data"]) == 10
    assert set(body["data"][0]) <= {"campaign", "candidate_id", "formula", "n_sites", "state"} | {
        "acquisition"
    }
    # Pages of maggma's pagination cover the collection once.
    ids = []
    for page in range(1, n_cands // 10 + 2):
        r = client.get(
            "/api/candidates/",
            params={
                "campaign": name,
                "_page": page,
                "_per_page": 10,
                "_sort_fields": "candidate_id",
            },
        )
        ids += [d["candidate_id"] for d in r.json()["data"]]
    assert ids == sorted(stores.candidate_ids(name))
    # Filters, projection, numeric ranges, sorting.
    labelled = client.get(
        "/api/candidates/", params={"campaign": name, "state": "labelled", "_fields": "formula"}
    ).json()
    assert labelled["meta"]["total_doc"] == 6 and all(
        set(d) == {"formula"} for d in labelled["data"]
    )
    labels = client.get(
        "/api/labels/",
        params={"campaign": name, "energy_per_atom_max": 0.1, "_sort_fields": "energy_per_atom"},
    ).json()["data"]
    stored = sorted(
        lab["energy_per_atom"] for lab in stores.get_labels(name) if lab["energy_per_atom"] <= 0.1
    )
    assert [lab["energy_per_atom"] for lab in labels] == stored
    models = client.get("/api/models/", params={"campaign": name, "_sort_fields": "-iteration"})
    assert models.json()["data"][0]["iteration"] == stores.latest_model(name)["iteration"]
    doc = client.get(f"/api/campaigns/{name}/?_fields=name,n_oracle_calls").json()["data"][0]
    assert doc["name"] == name and doc["n_oracle_calls"] == 6
    listed = client.get("/api/campaigns/", params={"state": "stopped"}).json()["data"]
    assert [d["name"] for d in listed] == [name]


def test_dashboard_numbers_equal_status_json_and_report(served):
    client, stores, name, store_file = served
    status = json.loads(
        runner.invoke(cli_app, ["status", name, "--json", "--store", str(store_file)]).output
    )
    assert client.get(f"{DASH}/{name}/status").json() == json.loads(json.dumps(status))
    row = client.get(DASH).json()[0]
    assert row["name"] == name and row["system"] == "cuau_fcc"
    assert row["metrics"]["rmse"] == status["metrics"]["rmse"]
    assert row["criteria"] == status["criteria"] and row["n_oracle_calls"] == 6
    plots = client.get(f"{DASH}/{name}/plots").json()
    data = collect(stores, name)
    hull = hull_table(data)
    assert plots["summary"] == json.loads(json.dumps(summary(data, hull)))
    assert plots["learning_curve"]["rmse"][-1] == status["metrics"]["rmse"]
    assert plots["calibration"]["ece"] == pytest.approx(status["metrics"]["ece"])
    assert plots["hull"]["ground_states"] == hull["ground_states"]
    assert len(plots["parity"]["oracle"]) == 6 and len(plots["acquisitions"]) == 6


def test_hull_plot_shows_the_unlabelled_candidates_as_predicted(served):
    """The dashboard's hull: every unlabelled candidate with the latest model's predicted
    formation energy; its std is the candidate table's sigma (the same posterior)."""
    client, stores, name, _ = served
    hull = client.get(f"{DASH}/{name}/plots").json()["hull"]
    pred = hull["predicted"]
    labelled = set(hull["ids"])
    assert set(pred["ids"]) == set(stores.candidate_ids(name)) - labelled
    rows = client.get(f"{DASH}/{name}/candidates", params={"per_page": 500}).json()["rows"]
    sigma = {r["candidate_id"]: r["sigma"] for r in rows}
    for cid, std in zip(pred["ids"], pred["std"], strict=True):
        assert std == pytest.approx(sigma[cid], rel=1e-9)
    # A large pool is cut to the candidates predicted closest to the hull.
    from alcampaign.serve.dashboard import _nearest_predicted

    cut = _nearest_predicted(pred, keep=3)
    assert cut["n_total"] == len(pred["ids"]) and len(cut["ids"]) == 3
    assert cut["e_above_hull"] == sorted(pred["e_above_hull"])[:3]
    with_p = {**pred, "p_on_hull": [0.01 * i for i in range(len(pred["ids"]))]}
    cut = _nearest_predicted(with_p, keep=3)  # P(on hull) stays with its candidate
    assert cut["p_on_hull"] == [with_p["p_on_hull"][pred["ids"].index(c)] for c in cut["ids"]]


def test_candidate_table_pages_joins_labels_and_predicts(served):
    client, stores, name, _ = served
    total = stores.candidates.count({"campaign": name})
    seen = []
    for page in (1, 2, 3):
        t = client.get(f"{DASH}/{name}/candidates", params={"page": page, "per_page": 12}).json()
        assert t["total"] == total and t["n_pages"] == -(-total // 12)
        seen += [r["candidate_id"] for r in t["rows"]]
    assert seen == sorted(stores.candidate_ids(name))
    labels = {lab["candidate_id"]: lab for lab in stores.get_labels(name)}
    t = client.get(f"{DASH}/{name}/candidates", params={"state": "labelled"}).json()
    assert {r["candidate_id"] for r in t["rows"]} == set(labels)
    for r in t["rows"]:
        assert r["energy_per_atom"] == labels[r["candidate_id"]]["energy_per_atom"]
        assert r["energy_source"] == "emt" and r["relaxed"] and r["sigma"] > 0
    # The surrogate columns are the stored posterior's predictions (closed form).
    model = stores.latest_model(name)
    feats = {d["candidate_id"]: d["features"] for d in stores.candidate_table(name, ["features"])}
    r = t["rows"][0]
    x = np.array(feats[r["candidate_id"]])
    mean = x @ np.array(model["mean"]) + model["offset"]
    std = np.sqrt(x @ np.array(model["covariance"]) @ x + 1 / model["beta"])
    std *= (model.get("calibration") or {}).get("scale", 1.0)  # recalibrated
    assert r["predicted"] == pytest.approx(mean) and r["sigma"] == pytest.approx(std)
    # Search: part of the formula, or the start of an id.
    au = client.get(f"{DASH}/{name}/candidates", params={"search": "Au3"}).json()
    assert au["rows"] and all("Au3" in r["formula"] for r in au["rows"])
    one = client.get(f"{DASH}/{name}/candidates", params={"search": seen[5][:10]}).json()
    assert [r["candidate_id"] for r in one["rows"]] == [seen[5]]


def test_cif_download_parses(served):
    client, stores, name, _ = served
    cand = stores.candidate_table(name, ["structure"], {"state": "labelled"})[0]
    r = client.get(f"{DASH}/{name}/structures/{cand['candidate_id']}.cif")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    s = Structure.from_str(r.text, fmt="cif")
    assert s.composition == Structure.from_dict(cand["structure"]).composition
    relaxed = client.get(
        f"{DASH}/{name}/structures/{cand['candidate_id']}.cif", params={"relaxed": "true"}
    )
    assert Structure.from_str(relaxed.text, fmt="cif").composition == s.composition


def test_pages_and_static_assets(served):
    client, _, name, _ = served
    index = client.get("/")
    assert index.status_code == 200 and "/static/plotly.min.js" in index.text
    assert "cdn" not in index.text.lower() and "https://" not in index.text
    page = client.get(f"/campaign/{name}")
    assert page.status_code == 200 and f'data-campaign="{name}"' in page.text
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert client.get("/api/heartbeat").json()["read_only"] is True


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        ("/api/candidates/?state=bogus", 400, "choose one of"),
        ("/api/candidates/?_page=1&_per_page=5000", 400, "max limit"),
        ("/api/candidates/?_limit=-1", 400, "negative"),
        ("/api/candidates/?colour=red", 400, "colour"),
        ("/api/candidates/?n_sites_max=many", 400, "n_sites_max"),
        ("/api/labels/?status=maybe", 400, "success, failed"),
        ("/api/campaigns/nope/", 404, "not found"),
        (f"{DASH}/nope/status", 404, "no campaign named 'nope'"),
        (f"{DASH}/nope/plots", 404, "no campaign named 'nope'"),
        (f"{DASH}/nope/candidates", 404, "no campaign named 'nope'"),
        (f"{DASH}/served-cuau/candidates?page=0", 400, "page"),
        (f"{DASH}/served-cuau/candidates?page=x", 400, "valid integer"),
        (f"{DASH}/served-cuau/candidates?page=99", 400, "there are 1 page(s)"),
        (f"{DASH}/served-cuau/candidates?per_page=501", 400, "per_page"),
        (f"{DASH}/served-cuau/candidates?state=done", 400, "choose one of"),
        (f"{DASH}/served-cuau/candidates?sort=energy", 400, "chgnet_energy"),
        (f"{DASH}/served-cuau/candidates?pge=2", 400, "unknown query parameter(s) pge"),
        (f"{DASH}/served-cuau/structures/0000.cif", 404, "no candidate '0000'"),
        (f"{DASH}/served-cuau/structures/0000.cif?relaxed=maybe", 400, "relaxed"),
        (f"{DASH}?x=1", 400, "unknown query parameter"),
        ("/campaign/nope", 404, "no campaign named"),
    ],
)
def test_bad_parameters_get_clear_4xx(served, url, code, says):
    client = served[0]
    r = client.get(url)
    assert r.status_code == code, r.text
    assert says in r.json()["detail"], r.json()


def test_nothing_is_written(served, stored_campaign):
    client, stores, name, store_file = served
    db = store_file.parent / "home" / "db"
    before = _snapshot(db)
    for url in (
        DASH,
        f"{DASH}/{name}/status",
        f"{DASH}/{name}/plots",
        f"{DASH}/{name}/candidates?page=2&per_page=10&sort=formula",
        "/api/candidates/?_all_fields=true",
        "/api/labels/",
        "/api/models/",
        "/api/campaigns/",
    ):
        assert client.get(url).status_code == 200, url
    assert _snapshot(db) == before
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)("/api/campaigns/").status_code == 405
    view = read_only(stores)
    with pytest.raises(AttributeError):
        view.candidates._collection.insert_one({"x": 1})
    with pytest.raises(AttributeError):
        view.update_campaign(name, {"state": "running"})


@pytest.fixture
def memory_stores(memory_store):
    return CampaignStores.from_job_store(memory_store)


def test_credentials_are_never_served(memory_stores):
    memory_stores.create_campaign(
        "secretive",
        {
            "oracle": {
                "fidelity": "dft",
                "kwargs": {"password": "hunter2", "api_key": "k3y", "db_uri": "mongodb://u:p@h"},
            }
        },
    )
    client = TestClient(create_app(memory_stores), base_url=LOCAL)
    for url in ("/api/campaigns/secretive/?_all_fields=true", "/api/campaigns/?_all_fields=true"):
        text = client.get(url).text
        assert "hunter2" not in text and "k3y" not in text and "u:p@h" not in text
        assert REDACTED in text
    assert "hunter2" not in client.get(f"{DASH}/secretive/status").text


def test_paging_a_big_collection(memory_stores):
    """5,000 synthetic candidates in a MemoryStore (100,000 in benchmarks/)."""
    from alcampaign.store.facade import CANDIDATE_STATES

    n = 5000
    rng = np.random.default_rng(0)
    energies = rng.normal(size=n)
    memory_stores.create_campaign("big", {"oracle": {"fidelity": "emt"}})
    memory_stores.candidates._collection.insert_many(
        [
            {
                "campaign": "big",
                "candidate_id": f"{i:08x}",
                "formula": ["CuAu", "Cu3Au", "CuAu3"][i % 3],
                "n_sites": 2 + i % 7,
                "state": CANDIDATE_STATES[i % 2],
                "prescreen": {"energy_per_atom": float(energies[i])},
                "structure": {"big": "x" * 200},
            }
            for i in range(n)
        ]
    )
    client = TestClient(create_app(memory_stores), base_url=LOCAL)
    last = client.get(f"{DASH}/big/candidates", params={"page": 50, "per_page": 100}).json()
    assert last["total"] == n and last["n_pages"] == 50 and len(last["rows"]) == 100
    assert last["rows"][-1]["candidate_id"] == f"{n - 1:08x}"
    by_e = client.get(
        f"{DASH}/big/candidates", params={"page": 3, "per_page": 100, "sort": "chgnet_energy"}
    ).json()
    np.testing.assert_allclose(
        [r["energy_per_atom"] for r in by_e["rows"]], np.sort(energies)[200:300]
    )
    assert all(r["energy_source"] == "chgnet" and r["predicted"] is None for r in by_e["rows"])
    pool = client.get(
        f"{DASH}/big/candidates", params={"state": "pool", "search": "Cu3", "per_page": 500}
    ).json()
    assert pool["total"] == sum(i % 2 == 0 and i % 3 == 1 for i in range(n))
    assert (
        client.get("/api/candidates/", params={"campaign": "big"}).json()["meta"]["total_doc"] == n
    )


def test_pages_reflect_new_labels(served, memory_stores):
    """A copy of the stored campaign; a label added while the app runs shows at once."""
    _, stores, name, _ = served
    for coll in ("candidates", "labels", "models", "campaigns"):
        docs = getattr(stores, coll).query({})
        getattr(memory_stores, coll)._collection.insert_many([dict(d) for d in docs])
    client = TestClient(create_app(memory_stores), base_url=LOCAL)
    pool = client.get(f"{DASH}/{name}/candidates", params={"state": "pool"}).json()
    cid = pool["rows"][0]["candidate_id"]
    n_labelled = client.get(f"{DASH}/{name}/candidates", params={"state": "labelled"}).json()
    from alcampaign.store.facade import label_document

    struct = Structure.from_dict(memory_stores.candidate_table(name, ["structure"])[0]["structure"])
    memory_stores.add_labels(
        [
            label_document(
                name,
                cid,
                "emt",
                oracle={},
                cost=1.0,
                iteration=9,
                energy_per_atom=-1.5,
                structure=struct,
            )
        ]
    )
    memory_stores.set_state(name, [cid], "labelled")
    memory_stores.update_counts(name, "emt")
    after = client.get(f"{DASH}/{name}/candidates", params={"state": "labelled"}).json()
    assert after["total"] == n_labelled["total"] + 1
    row = next(r for r in after["rows"] if r["candidate_id"] == cid)
    assert row["energy_per_atom"] == -1.5 and row["energy_source"] == "emt"
    assert client.get(f"{DASH}/{name}/status").json()["n_oracle_calls"] == 7


def test_serve_rejects_bad_options(tmp_path):
    assert runner.invoke(cli_app, ["serve", "--port", "0"]).exit_code == 2
    assert runner.invoke(cli_app, ["serve", "--poll", "-1"]).exit_code == 2
    missing = runner.invoke(cli_app, ["serve", "--store", str(tmp_path / "no.yaml")])
    assert missing.exit_code == 2 and "error" in missing.output.lower()
