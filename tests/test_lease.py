"""The campaign lease: two controllers on one campaign never both acquire."""

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from alcampaign.campaign import controller, lease
from alcampaign.store.facade import CampaignStores

CONFIG = {
    "name": "lease",
    "system": {"structure": "/unused.cif"},
    "initial_design": {"n_initial": 4},
    "acquisition": {"rule": "max_variance", "batch_size": 3},
    "stopping": {"max_oracle_calls": 100, "rmse_target": 1e-9},
}


@pytest.fixture
def stores(memory_store):
    """A campaign ready for its first decision: 40 candidates, 6 labels."""
    stores = CampaignStores.from_job_store(memory_store)
    stores.create_campaign("lease", CONFIG)
    rng = np.random.default_rng(0)
    stores.insert_candidates(
        "lease",
        [
            {
                "campaign": "lease",
                "candidate_id": f"c{i:03d}",
                "features": [1.0, *rng.normal(size=3)],
                "composition": {"Cu": 1.0},
                "state": "pool",
            }
            for i in range(40)
        ],
    )
    stores.add_labels(
        [
            {
                "campaign": "lease",
                "candidate_id": f"c{i:03d}",
                "fidelity": "oracle",
                "status": "success",
                "energy_per_atom": float(rng.normal()),
                "cost": 1.0,
            }
            for i in range(6)
        ]
    )
    return stores


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_holder_keeps_the_lease_and_nothing_is_acquired(stores, monkeypatch):
    monkeypatch.setattr(lease, "LEASE_WAIT", 0.3)
    holder = f"{socket.gethostname()}:{1}:other-controller"  # pid 1 is alive
    assert stores.acquire_lease("lease", holder, ttl=60)
    out = controller.decide_under_lease(stores, "lease", 0, "me")
    assert out == {"skipped": "another controller holds the campaign lease"}
    doc = stores.get_campaign("lease")
    assert not doc["history"] and not doc.get("acquisitions")
    assert doc["lease"]["owner"] == holder


def test_a_dead_holders_lease_is_broken(stores):
    dead = f"{socket.gethostname()}:{_dead_pid()}:killed-controller"
    assert stores.acquire_lease("lease", dead, ttl=600)
    controller.decide_under_lease(stores, "lease", 0, "me")
    doc = stores.get_campaign("lease")
    assert len(doc["history"]) == 1 and len(doc["acquisitions"]) == 3
    assert doc["lease"] is None  # given back after the decision


def test_an_iteration_is_decided_once(stores):
    controller.decide_under_lease(stores, "lease", 0, "first")
    out = controller.decide_under_lease(stores, "lease", 0, "second")
    assert out == {"skipped": "iteration 0 was decided already"}
    assert len(stores.get_campaign("lease")["acquisitions"]) == 3


def test_concurrent_controllers_acquire_once(stores):
    barrier = threading.Barrier(4)
    results = []

    def run(owner):
        barrier.wait()
        results.append(controller.decide_under_lease(stores, "lease", 0, owner))

    threads = [threading.Thread(target=run, args=(f"owner{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = stores.get_campaign("lease")
    assert len(doc["history"]) == 1 and len(doc["acquisitions"]) == 3
    assert len({a["candidate_id"] for a in doc["acquisitions"]}) == 3
    assert sum(isinstance(r, dict) and "skipped" in r for r in results) == 3


def test_processes_opening_a_new_embedded_database_together(tmp_path):
    """montydb writes its storage files on the first open: processes opening a new
    database at the same moment (``run`` + ``resume``) must not read them half-written."""
    code = "from alcampaign.store.facade import open_stores; open_stores(None)"
    cmd = [sys.executable, "-c", code]
    for trial in range(4):
        env = {**os.environ, "ALCAMPAIGN_HOME": str(tmp_path / str(trial))}
        procs = [
            subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-500:]


def test_opening_the_embedded_database_while_another_program_rewrites_it(tmp_path):
    """maggma's ``MontyStore.connect`` rewrites montydb's storage files on every connect;
    a program doing so without our lock (found by the lease harness's own reader) must
    not make ``run`` fail with "Empty module name"."""
    from alcampaign.config import embedded_store_spec
    from alcampaign.store.facade import connect_job_store, job_store_from_spec

    spec = embedded_store_spec(tmp_path)
    rogue = (
        "import sys, time\n"
        "from maggma.stores import MontyStore\n"
        "end = time.time() + float(sys.argv[2])\n"
        "while time.time() < end:\n"
        "    MontyStore('x', database_path=sys.argv[1], database_name='alcampaign').connect()\n"
    )
    connect_job_store(job_store_from_spec(spec))  # the database exists, as in a campaign
    proc = subprocess.Popen([sys.executable, "-c", rogue, str(tmp_path / "db"), "20"])
    try:
        time.sleep(3)  # the rogue program is importing maggma, then rewriting
        for _ in range(60):
            connect_job_store(job_store_from_spec(spec))
    finally:
        proc.kill()
        proc.wait()
