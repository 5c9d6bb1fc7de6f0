"""Oracle batches in worker processes: same labels as the sequential run, safe resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jobflow import run_locally

from alcampaign.campaign.flows import campaign_flow, resume_flow
from alcampaign.campaign.resources import WORKERS_ENV, resolve
from alcampaign.config import ConfigError, ResourcesConfig, load_config
from alcampaign.store.facade import CampaignStores
from alcampaign.structures.enumeration import read_structure

from conftest import small_config_dict

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _fresh_pools():
    """Each test starts its own worker pool (pools live as long as their process)."""
    from alcampaign.campaign.parallel import shutdown_pools

    shutdown_pools()
    yield
    shutdown_pools()


def _labels(stores: CampaignStores, name: str) -> dict:
    return {
        (d["candidate_id"], d["fidelity"]): round(d["energy_per_atom"], 10)
        for d in stores.labels.query({"campaign": name, "status": "success"})
    }


def _run(cfg, job_store, root, ensure_success=True, flow=None):
    flow = flow or campaign_flow(cfg, read_structure(cfg.system.structure))
    run_locally(flow, store=job_store, root_dir=root, log=False, ensure_success=ensure_success)
    return CampaignStores.from_job_store(job_store)


def test_resources_policy(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    r = resolve(ResourcesConfig())
    assert (r.workers, r.threads_per_process) == (1, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv(WORKERS_ENV, "3")
    r = resolve(ResourcesConfig())
    assert (r.workers, r.threads_per_process) == (3, 4)
    assert "OMP_NUM_THREADS" in r.source and WORKERS_ENV in r.source
    assert resolve(ResourcesConfig(threads_per_process=2), workers=5).threads_per_process == 2
    monkeypatch.setenv(WORKERS_ENV, "zero")
    with pytest.raises(ConfigError, match=WORKERS_ENV):
        resolve(ResourcesConfig())


@pytest.mark.slow
def test_two_workers_give_the_sequential_labels(write_config, memory_store, tmp_path, monkeypatch):
    """Same seed, same questions, same answers; provenance (job documents) stored."""
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    overrides = {"acquisition": {"rule": "max_variance", "batch_size": 3},
                 "stopping": {"max_oracle_calls": 7}}
    seq_cfg = load_config(write_config(small_config_dict(name="seq", **overrides), "a.yaml"))
    par_cfg = load_config(
        write_config(small_config_dict(name="par", resources={"workers": 2}, **overrides), "b.yaml")
    )
    (tmp_path / "s").mkdir()
    (tmp_path / "p").mkdir()
    stores = _run(seq_cfg, memory_store, tmp_path / "s")
    _run(par_cfg, memory_store, tmp_path / "p")
    seq, par = _labels(stores, "seq"), _labels(stores, "par")
    assert len(par) == 7 and par.keys() == seq.keys()
    for key in seq:
        assert par[key] == pytest.approx(seq[key], abs=1e-8)
    batch_docs = list(memory_store.query({"name": {"$regex": "^oracle batch par"}}))
    assert batch_docs, "the batch ran through worker processes"
    for label in stores.labels.query({"campaign": "par"}):
        doc = memory_store.query_one({"uuid": label["job_uuid"]})
        assert doc["metadata"]["candidate_id"] == label["candidate_id"]


@pytest.mark.slow
def test_worker_killed_mid_batch_then_resume(write_config, alc_home, tmp_path, monkeypatch):
    """A worker SIGKILLed mid-batch fails the run; resume asks only what is missing."""
    from alcampaign.store.facade import open_stores

    monkeypatch.syspath_prepend(str(TESTS))
    # The spawned workers import the test Maker by path.
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("ALCAMPAIGN_TEST_KILL_FLAG", str(tmp_path / "killed"))
    cfg_dict = small_config_dict(
        name="killed",
        resources={"workers": 2},
        acquisition={"rule": "max_variance", "batch_size": 2},
        stopping={"max_oracle_calls": 6},
    )
    cfg_dict["oracle"]["maker"] = "oracles.KillOnceEmtRelaxMaker"
    cfg = load_config(write_config(cfg_dict))
    job_store, stores = open_stores(None)
    _run(cfg, job_store, tmp_path, ensure_success=False)
    assert (tmp_path / "killed").exists()
    doc = stores.get_campaign("killed")
    assert doc["state"] == "running"  # the batch job failed; the campaign did not stop
    before = _labels(stores, "killed")
    _run(cfg, job_store, tmp_path, flow=resume_flow("killed"))
    doc = stores.get_campaign("killed")
    labels = list(stores.labels.query({"campaign": "killed"}))
    ids = [(d["candidate_id"], d["fidelity"]) for d in labels]
    assert doc["state"] == "stopped"
    assert len(ids) == len(set(ids)) == doc["n_oracle_calls"] == 6
    assert set(before) <= set(_labels(stores, "killed"))


def test_worker_pool_is_kept_and_replaced_when_broken():
    """Batches reuse one warm pool; a pool broken by a killed worker is replaced."""
    import signal
    from concurrent.futures.process import BrokenProcessPool

    from alcampaign.campaign.parallel import prewarm, worker_pool

    prewarm(2, 1, ("json",))
    pool = worker_pool(2, 1)
    assert worker_pool(2, 1) is pool
    pid = pool.submit(os.getpid).result(timeout=120)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        for _ in range(50):  # the pool notices the dead worker at its next task
            pool.submit(os.getpid).result(timeout=120)
    fresh = worker_pool(2, 1)
    assert fresh is not pool
    assert fresh.submit(os.getpid).result(timeout=120) != pid


def test_oracle_modules_are_the_makers_modules():
    """The modules a worker imports are those of the jobs' functions (one derivation)."""
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    from alcampaign.campaign.parallel import oracle_module, oracle_modules

    path = "atomate2.forcefields.jobs.ForceFieldRelaxMaker"
    oracle = {"maker": path, "cheap": {"maker": path}}
    assert oracle_modules(oracle) == ("atomate2.forcefields.jobs",)
    assert oracle_modules({"maker": "external"}) == ()
    structure = read_structure(Path(__file__).parents[1] / "examples" / "cu_fcc.cif")
    job = ForceFieldRelaxMaker(force_field_name="CHGNet").make(structure)
    assert oracle_module(job.as_dict()) == oracle_modules(oracle)[0]


def test_batches_start_with_the_largest_cells():
    """Largest first (LPT): a big cell never starts last while the other workers idle."""
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    from alcampaign.campaign.parallel import largest_first

    cell = read_structure(Path(__file__).parents[1] / "examples" / "cu_fcc.cif")
    maker = ForceFieldRelaxMaker(force_field_name="CHGNet")
    jobs = [maker.make(cell * m) for m in ((1, 1, 1), (2, 1, 1), (1, 1, 1), (2, 2, 1))]
    assert [len(j.function_args[0]) for j in jobs] == [4, 8, 4, 16]
    assert largest_first(jobs) == [3, 1, 0, 2]
