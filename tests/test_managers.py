"""The campaign through each manager: run_locally (elsewhere), FireWorks, jobflow-remote.

No MongoDB server can run here. The FireWorks LaunchPad, the jobflow-remote queue and
the MongoStore campaign collections are served by one mongomock-ng client per test
(``pymongo.MongoClient`` replaced where FireWorks and maggma import it); its ``close``
keeps the data, as a real server would. jobflow-remote's local worker runs each job in
its own ``jf execution run`` process, so there the campaign collections are an embedded
(montydb, on disk) store that those processes share.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mongomock_ng as mongomock
import pytest
import yaml
from typer.testing import CliRunner

from alcampaign.campaign.flows import campaign_flow
from alcampaign.campaign.managers import (
    PortableJobStore,
    campaign_job_store,
    read_store_template,
)
from alcampaign.cli import app
from alcampaign.config import ConfigError, load_config
from alcampaign.store.facade import CampaignStores, load_job_store
from alcampaign.structures.enumeration import read_structure

from conftest import ROOT, STORES, small_config_dict

pytest.importorskip("fireworks")
pytest.importorskip("jobflow_remote")

SECRETS = ("s3cret-Pa55word", "alice", "lp-S3cret", "bob", "jfr-S3cret", "carol")
MONGODB = str(STORES / "mongodb.yaml")
runner = CliRunner()


class _Server(mongomock.MongoClient):
    """One in-memory server: closing a client does not erase it (as with pymongo)."""

    def close(self) -> None:
        pass


@pytest.fixture
def mongo(monkeypatch, alc_home):
    import fireworks.core.launchpad as fw_launchpad
    import maggma.stores.mongolike as mongolike

    client = _Server()
    monkeypatch.setattr(mongolike, "MongoClient", lambda *a, **k: client)
    monkeypatch.setattr(fw_launchpad, "MongoClient", lambda *a, **k: client)
    # The GridFS fallback (documents over 16 MB) needs pymongo's own Database class.
    monkeypatch.setattr(fw_launchpad, "GRIDFS_FALLBACK_COLLECTION", None)
    monkeypatch.setenv(
        "ALCAMPAIGN_MONGODB_URI",
        f"mongodb://alice:{SECRETS[0]}@db.example.invalid:27017/?authSource=admin",
    )
    monkeypatch.setenv("ALCAMPAIGN_MONGODB_DATABASE", "alc_test")
    monkeypatch.setenv("FW_LAUNCHPAD_URI", f"mongodb://bob:{SECRETS[2]}@fw.example.invalid/")
    return client


@pytest.fixture
def launchpad_file(mongo, tmp_path) -> Path:
    """A launchpad YAML whose URI comes from the environment, on an initialised LaunchPad."""
    from fireworks import LaunchPad

    path = tmp_path / "my_launchpad.yaml"
    path.write_text("host: ${FW_LAUNCHPAD_URI}\nuri_mode: true\nname: fw_test\n")
    LaunchPad(host="mongodb://fw.example.invalid/", uri_mode=True, name="fw_test").reset(
        "", require_password=False
    )
    return path


def _leaks(client, *folders: Path) -> list[str]:
    """Every stored document or written file that holds a credential."""
    found = []
    for db in client.list_database_names():
        for coll in client[db].list_collection_names():
            for doc in client[db][coll].find():
                text = json.dumps(doc, default=str)
                found += [f"{db}.{coll}: {s}" for s in SECRETS if s in text]
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                text = path.read_text(errors="replace")
                found += [f"{path}: {s}" for s in SECRETS if s in text]
    return found


def _check_campaign(stores: CampaignStores, cfg) -> dict:
    """The invariants of the run_locally end-to-end test, for any manager."""
    doc = stores.get_campaign(cfg.name)
    assert doc["state"] == "stopped" and doc["stop_reason"]
    assert doc["iteration"] >= 1  # the controller added at least one further iteration
    assert [h["iteration"] for h in doc["history"]] == list(range(doc["iteration"] + 1))
    labels = stores.get_labels(cfg.name, cfg.oracle.fidelity)
    assert len(labels) == doc["n_oracle_calls"] == cfg.stopping.max_oracle_calls
    assert len({lab["candidate_id"] for lab in labels}) == len(labels)  # never asked twice
    assert all(lab["status"] == "success" and lab["energy_per_atom"] < 0.5 for lab in labels)
    cands = stores.candidate_table(cfg.name, ["state", "acquisition"])
    labelled = [c for c in cands if c["state"] == "labelled"]
    assert {c["candidate_id"] for c in labelled} == {lab["candidate_id"] for lab in labels}
    # Candidates chosen by the controller's additions were labelled too.
    assert {c["acquisition"]["rule"] for c in labelled} == {
        "initial_end_member",
        "initial_random",
        "max_variance",
    }
    assert stores.latest_model(cfg.name)["iteration"] == doc["iteration"]
    return doc


def _two_iterations() -> dict:
    """The smallest campaign the controller extends: 3 initial labels, then one more."""
    return small_config_dict(
        oracle={"kwargs": {"relax_cell": True, "steps": 200, "relax_kwargs": {"fmax": 0.05}}},
        initial_design={"n_initial": 3},
        acquisition={"batch_size": 1},
        stopping={"max_oracle_calls": 4, "min_labels": 3, "cv_folds": 3},
    )


# -- store templates and credentials -------------------------------------------------


def test_portable_store_serialises_references_not_credentials(mongo, write_config):
    from jobflow.managers.fireworks import flow_to_workflow
    from monty.json import MontyDecoder

    template = read_store_template(MONGODB)
    store = PortableJobStore(template)
    text = json.dumps(store.as_dict())
    assert "${ALCAMPAIGN_MONGODB_URI}" in text and SECRETS[0] not in text
    # The worker's decoding expands the references from its own environment.
    back = MontyDecoder().process_decoded(json.loads(text))
    assert isinstance(back, PortableJobStore)
    assert back.docs_store.uri == os.environ["ALCAMPAIGN_MONGODB_URI"]
    cfg = load_config(write_config(small_config_dict()))
    workflow = flow_to_workflow(campaign_flow(cfg, read_structure(cfg.system.structure)), store)
    dumped = json.dumps(workflow.to_dict(), default=str)
    n_stores = 1 + len(template["additional_stores"])  # docs + additional stores
    assert dumped.count("${ALCAMPAIGN_MONGODB_URI}") == 4 * n_stores  # in each of 4 Fireworks
    assert not [s for s in SECRETS if s in dumped]


@pytest.mark.parametrize(
    ("uri", "refused"),
    [
        ("mongodb://alice:pw@host/", True),
        ("mongodb://${U}:pw@host/", True),
        ("mongodb://${U}:${P}@host/", False),
        ("${ALCAMPAIGN_MONGODB_URI}", False),
        ("mongodb://host:27017/", False),
    ],
)
def test_store_file_with_a_literal_credential_is_refused(uri, refused, tmp_path):
    spec = yaml.safe_load((STORES / "mongodb.yaml").read_text())
    spec["docs_store"]["uri"] = uri
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(spec))
    if refused:
        with pytest.raises(ConfigError, match="literal credential"):
            read_store_template(path)
    else:
        read_store_template(path)
    spec["docs_store"] = {"type": "MongoStore", "password": "pw", "collection_name": "docs"}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="'password' holds a literal credential"):
        read_store_template(path)


def test_jobflow_remote_job_without_a_worker_store_is_a_clear_error(monkeypatch, memory_store):
    from jobflow_remote.jobs import run

    assert campaign_job_store(memory_store) is memory_store  # local and FireWorks
    monkeypatch.setattr(run.CURRENT_JOBDOC, "job_doc", object())
    monkeypatch.delenv("ALCAMPAIGN_STORE", raising=False)
    with pytest.raises(ConfigError, match="ALCAMPAIGN_STORE"):
        campaign_job_store(memory_store)


# -- FireWorks -----------------------------------------------------------------------


def test_fireworks_submission_and_bad_options(mongo, launchpad_file, write_config, alc_home):
    config = str(write_config(small_config_dict()))
    base = ["run", config, "--store", MONGODB, "--manager", "fireworks"]
    result = runner.invoke(app, [*base, "--launchpad", str(launchpad_file)])
    assert result.exit_code == 0, result.output
    assert "4 Fireworks of campaign test-cuau added" in result.output
    fws = list(mongo["fw_test"].fireworks.find({}, {"name": 1, "state": 1, "spec": 1}))
    assert sorted(fw["state"] for fw in fws) == ["READY", "WAITING", "WAITING", "WAITING"]
    assert {fw["spec"]["alcampaign"] for fw in fws} == {"test-cuau"}
    # Submitting runs nothing: the workers create the campaign when they run it.
    assert "alc_test" not in mongo.list_database_names()
    assert not _leaks(mongo), _leaks(mongo)

    for args, message in [
        ([*base, "--launchpad", str(launchpad_file), "--project", "p"], "--project"),
        (["run", config, "--launch"], "go with --manager fireworks"),
        (["run", config, "--manager", "slurm"], "choose one of local, fireworks"),
        ([*base, "--launchpad", str(launchpad_file.parent / "nope.yaml")], "does not exist"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, result.output
    mongo.drop_database("fw_test")
    result = runner.invoke(app, [*base, "--launchpad", str(launchpad_file)])
    assert result.exit_code == 2 and "lpad reset" in result.output, result.output
    assert not alc_home.exists()


@pytest.mark.slow
def test_campaign_through_fireworks_rockets(mongo, launchpad_file, write_config, alc_home):
    """The dynamic campaign as FireWorks rockets (rapidfire), through the CLI."""
    from fireworks import Firework, LaunchPad, ScriptTask

    config = write_config(_two_iterations())
    base = ["--store", MONGODB, "--manager", "fireworks", "--launchpad", str(launchpad_file)]
    # Someone else's workflow on the shared LaunchPad: --launch must leave it alone.
    other = LaunchPad(host="mongodb://fw.example.invalid/", uri_mode=True, name="fw_test")
    other.add_wf(Firework(ScriptTask.from_str("echo other"), name="other"))
    result = runner.invoke(app, ["run", str(config), *base, "--launch"])
    assert result.exit_code == 0, result.output
    cfg = load_config(config)
    job_store = load_job_store(MONGODB)
    job_store.connect()
    stores = CampaignStores.from_job_store(job_store)
    doc = _check_campaign(stores, cfg)

    fws = list(mongo["fw_test"].fireworks.find({"spec.alcampaign": cfg.name}))
    assert {fw["state"] for fw in fws} == {"COMPLETED"}
    assert mongo["fw_test"].fireworks.find_one({"name": "other"})["state"] == "READY"
    names = [fw["name"] for fw in fws]
    # The controller's additions became Fireworks and ran; each oracle call once.
    assert sorted(n for n in names if n.startswith("controller")) == [
        f"controller {cfg.name} {k}" for k in range(doc["iteration"] + 1)
    ]
    assert len([n for n in names if n.startswith("emt ")]) == cfg.stopping.max_oracle_calls
    assert not _leaks(mongo, alc_home), _leaks(mongo, alc_home)
    assert not [s for s in SECRETS if s in result.output]

    # Resuming the stopped campaign through FireWorks submits nothing and changes nothing.
    result = runner.invoke(app, ["resume", cfg.name, *base, "--launch"])
    assert result.exit_code == 0 and "is stopped" in result.output, result.output
    assert len(stores.get_labels(cfg.name)) == cfg.stopping.max_oracle_calls
    assert mongo["fw_test"].fireworks.count_documents({}) == len(fws) + 1


# -- jobflow-remote ------------------------------------------------------------------


def _jfr_project(tmp_path: Path, monkeypatch) -> str:
    """A jobflow-remote project with a local worker; queue and outputs on the mock server."""
    import jobflow_remote

    folder = tmp_path / "jfremote"
    folder.mkdir()
    monkeypatch.setattr(jobflow_remote.SETTINGS, "projects_folder", str(folder))

    def mongo_store(collection: str, **extra) -> dict:
        return {
            "type": "MongoStore",
            "host": "jfr.example.invalid",
            "username": "carol",
            "password": SECRETS[4],
            "database": "jfr_test",
            "collection_name": collection,
            **extra,
        }

    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    project = {
        "name": "alc_test",
        "base_dir": str(tmp_path / "jfr_base"),
        "workers": {
            "local": {
                "type": "local",
                "scheduler_type": "shell",
                "work_dir": str(tmp_path / "jfr_work"),
                "pre_run": f"export PATH={Path(sys.executable).parent}:$PATH; "
                f"export PYTHONPATH={path}",
            }
        },
        "queue": {"store": mongo_store("jobs")},
        "jobstore": {
            "docs_store": mongo_store("outputs"),
            "additional_stores": {"data": mongo_store("data", key="uuid")},
        },
        "runner": {
            "delay_checkout": 0.5,
            "delay_check_run_status": 0.5,
            "delay_advance_status": 0.5,
        },
    }
    (folder / "alc_test.yaml").write_text(yaml.safe_dump(project))
    from jobflow_remote.config import ConfigManager

    ConfigManager().get_project("alc_test").get_job_controller().reset(max_limit=0)
    return "alc_test"


def test_jobflow_remote_submission_keeps_credentials_out(
    mongo, write_config, tmp_path, monkeypatch
):
    project = _jfr_project(tmp_path, monkeypatch)
    config = str(write_config(small_config_dict()))
    args = ["run", config, "--store", MONGODB, "--manager", "jobflow-remote", "--project", project]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 jobs of campaign test-cuau submitted" in result.output
    jobs = list(mongo["jfr_test"].jobs.find())
    assert sorted(j["job"]["name"] for j in jobs) == sorted(
        [
            "register test-cuau",
            "enumerate test-cuau",
            "prescreen test-cuau",
            "initial design test-cuau",
        ]
    )
    # The worker opens the campaign collections from the store file, by path.
    assert {j["exec_config"]["export"]["ALCAMPAIGN_STORE"] for j in jobs} == {MONGODB}
    assert not _leaks(mongo), _leaks(mongo)

    result = runner.invoke(app, [*args[:-1], "nope"])
    assert result.exit_code == 2 and "jobflow-remote" in result.output


@pytest.mark.slow
def test_campaign_through_jobflow_remote_runner(
    mongo, write_config, tmp_path, monkeypatch, alc_home
):
    """The dynamic campaign through jobflow-remote's runner and a local worker."""
    from jobflow_remote.jobs.runner import Runner

    project = _jfr_project(tmp_path, monkeypatch)
    config = write_config(_two_iterations())
    args = ["run", str(config), "--manager", "jobflow-remote", "--project", project]
    result = runner.invoke(app, args)  # the embedded store: ALCAMPAIGN_STORE=embedded
    assert result.exit_code == 0, result.output
    jobs = Runner(project).job_controller
    Runner(project).run_all_jobs(max_seconds=600)

    cfg = load_config(config)
    store = load_job_store(None)
    store.connect()
    doc = _check_campaign(CampaignStores.from_job_store(store), cfg)
    infos = jobs.get_jobs_info()
    assert {j.state.value for j in infos} == {"COMPLETED"}
    names = [j.name for j in infos]
    assert sorted(n for n in names if n.startswith("controller")) == [
        f"controller {cfg.name} {k}" for k in range(doc["iteration"] + 1)
    ]
    assert len([n for n in names if n.startswith("emt ")]) == cfg.stopping.max_oracle_calls
    assert not _leaks(mongo, alc_home, tmp_path / "jfr_work"), _leaks(mongo)
