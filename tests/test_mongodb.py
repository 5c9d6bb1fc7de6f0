"""The MongoDB code path (maggma MongoStore with a URI), served by mongomock-ng.

No MongoDB server can run here: ``pymongo.MongoClient`` inside maggma is replaced by
``mongomock.MongoClient``, which shares one in-memory server per process.
"""

from __future__ import annotations

import json

import mongomock_ng as mongomock
import pytest
from jobflow import run_locally
from typer.testing import CliRunner

from alcampaign.campaign.flows import campaign_flow
from alcampaign.cli import app
from alcampaign.config import load_config
from alcampaign.store.facade import CampaignStores, load_job_store
from alcampaign.structures.enumeration import read_structure

from conftest import STORES, small_config_dict

SECRET = "s3cret-Pa55word"
runner = CliRunner()


@pytest.fixture
def mongo(monkeypatch):
    import maggma.stores.mongolike as mongolike

    client = mongomock.MongoClient()
    monkeypatch.setattr(mongolike, "MongoClient", lambda *a, **k: client)
    monkeypatch.setenv(
        "ALCAMPAIGN_MONGODB_URI",
        f"mongodb://alice:{SECRET}@db.example.invalid:27017/?authSource=admin",
    )
    monkeypatch.setenv("ALCAMPAIGN_MONGODB_DATABASE", "alc_test")
    return client


def test_campaign_on_the_mongodb_code_path_keeps_credentials_out(mongo, write_config, tmp_path):
    cfg = load_config(write_config(small_config_dict(stopping={"max_oracle_calls": 6})))
    store = load_job_store(STORES / "mongodb.yaml")
    run_locally(
        campaign_flow(cfg, read_structure(cfg.system.structure)),
        store=store,
        root_dir=tmp_path,
        log=False,
        ensure_success=True,
    )
    stores = CampaignStores.from_job_store(store)
    doc = stores.get_campaign(cfg.name)
    assert doc["state"] == "stopped" and len(stores.get_labels(cfg.name)) == 6
    db = mongo["alc_test"]
    assert set(db.list_collection_names()) >= {
        "docs",
        "candidates",
        "labels",
        "models",
        "campaigns",
    }
    # No stored document, in any collection, carries the password or the user.
    for name in db.list_collection_names():
        for d in db[name].find():
            text = json.dumps(d, default=str)
            assert SECRET not in text and "alice" not in text, name


def test_unreachable_database_is_a_clear_error_and_writes_nothing(
    alc_home, write_config, monkeypatch
):
    monkeypatch.setenv(
        "ALCAMPAIGN_MONGODB_URI", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"
    )
    store = str(STORES / "mongodb.yaml")
    for args in (
        ["status", "x", "--store", store],
        ["run", str(write_config(small_config_dict())), "--store", store],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "could not connect to the database" in result.output
    assert not alc_home.exists()
    monkeypatch.delenv("ALCAMPAIGN_MONGODB_URI")
    result = runner.invoke(app, ["status", "x", "--store", store])
    assert result.exit_code == 2 and "ALCAMPAIGN_MONGODB_URI" in result.output
