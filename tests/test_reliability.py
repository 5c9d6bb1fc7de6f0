"""Three processes on one campaign, the lease holder killed at random moments.

``alcampaign run`` and two ``alcampaign resume`` drive one campaign on the embedded
store; the harness SIGKILLs whichever process holds the campaign lease at random
moments and restarts the dead slots as ``resume``. The oracle (``oracles.CountingEmtMaker``)
logs every call's start and end with its pid. Invariants, per repetition:

* never two processes inside the oracle for the same candidate at once (the lease);
* oracle answers stored (job-store outputs) == distinct labelled candidates ==
  ``n_oracle_calls``, each candidate answered once;
* a candidate computed more than once only because the process that computed it
  before was SIGKILLed before its answer was stored (the one window no workflow can
  close: the answer dies with the process); never otherwise;
* every process exits 0 (done, or "held by another process"), 2 (a ``resume``
  started before ``run`` created the campaign) or by the harness's SIGKILL.

The first two ``resume`` processes leave at once when ``run`` holds the lease (exit 0);
a slot whose process ended is restarted as ``resume --wait``, which waits for the lease
and takes it over when its holder dies.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from alcampaign.config import embedded_store_spec
from alcampaign.store.facade import CampaignStores, connect_job_store, job_store_from_spec

from conftest import small_config_dict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAME = "lease-harness"
REPETITIONS = int(os.environ.get("ALCAMPAIGN_HARNESS_REPS", "20"))
KILLS = 3


def _config(tmp: Path) -> Path:
    cfg = small_config_dict(
        name=NAME,
        oracle={
            "maker": "oracles.CountingEmtMaker",
            "kwargs": {"steps": 1, "relax_cell": False},
            "fidelity": "emt",
        },
        stopping={"max_oracle_calls": 8, "rmse_target": 1e-9, "min_labels": 5, "cv_folds": 4},
    )
    path = tmp / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _spawn(home: Path, log: Path, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "ALCAMPAIGN_HOME": str(home),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}",
        "ALCAMPAIGN_ORACLE_LOG": str(log),
        "ALCAMPAIGN_ORACLE_SLEEP": "0.2",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "alcampaign.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stores(home: Path) -> tuple:
    """The harness's own reader, opened as alcampaign opens it (under the connect lock)."""
    js = job_store_from_spec(embedded_store_spec(home))
    connect_job_store(js)
    return js, CampaignStores.from_job_store(js)


def _read(stores: CampaignStores, field: str) -> dict:
    """The campaign's field, or {} while montydb is still creating the collection
    (the file exists a moment before its table)."""
    try:
        return stores.campaigns._collection.find_one({"name": NAME}, projection={field: 1}) or {}
    except sqlite3.OperationalError:
        return {}


def _holder_pid(stores: CampaignStores) -> int | None:
    doc = _read(stores, "lease")
    owner = ((doc or {}).get("lease") or {}).get("owner") or ""
    pid = owner.split(":")[1] if owner.count(":") >= 2 else ""
    return int(pid) if pid.isdigit() else None


def _state(stores: CampaignStores) -> str | None:
    return _read(stores, "state").get("state")


def run_once(tmp: Path, seed: int) -> dict:
    """One repetition: three processes, up to ``KILLS`` SIGKILLs of the lease holder."""
    rng = random.Random(seed)
    home, log = tmp / "home", tmp / "oracle.jsonl"
    config = _config(tmp)
    slots = [_spawn(home, log, "run", str(config))]
    time.sleep(0.5)
    slots += [_spawn(home, log, "resume", NAME) for _ in range(2)]
    killed: dict[int, float] = {}
    codes: list[tuple[str, int, str]] = []
    js = stores = None
    next_kill = time.monotonic() + rng.uniform(2.0, 8.0)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if stores is None and (home / "db").exists():
            try:
                js, stores = _stores(home)
            except Exception:  # montydb still writing its storage config: next time
                js = stores = None
        state = _state(stores) if stores else None
        for i, proc in enumerate(slots):
            if proc.poll() is None:
                continue
            err = proc.stderr.read()
            proc.stderr.close()
            codes.append((" ".join(proc.args[3:]), proc.returncode, err[-800:]))
            if proc.returncode not in (0, 2, -signal.SIGKILL):
                raise AssertionError(f"{proc.args[3:]} exited {proc.returncode}: {err}")
            # Restarted slots wait for the lease (and take over when its holder dies).
            slots[i] = None if state == "stopped" else _spawn(home, log, "resume", NAME, "--wait")
        slots = [p for p in slots if p is not None]
        if not slots:
            break
        if stores and len(killed) < KILLS and time.monotonic() >= next_kill:
            pid = _holder_pid(stores)
            if pid in {p.pid for p in slots}:
                os.kill(pid, signal.SIGKILL)
                killed[pid] = time.time()
                next_kill = time.monotonic() + rng.uniform(1.0, 6.0)
        time.sleep(0.05)
    else:
        ran = [c for c in codes if c[0].startswith("run")]
        stuck = _diagnose(stores, slots, log) + f"\nrun exited: {ran}\nfirst exits: {codes[:3]}"
        raise AssertionError(f"the campaign did not stop within 600 s:\n{stuck}")
    js, stores = _stores(home)
    exits = [(args, rc) for args, rc, _ in codes]
    return _check(js, stores, log, killed) | {"codes": exits, "kills": len(killed)}


def _diagnose(stores, slots: list, log: Path) -> str:
    """What a stuck repetition looked like: the campaign, the live processes, the oracle."""
    doc = stores.get_campaign(NAME) if stores else {}
    keep = ("state", "iteration", "n_oracle_calls", "lease", "stop_reason")
    lines = [f"campaign: {({k: (doc or {}).get(k) for k in keep})}"]
    for proc in slots:
        proc.kill()
        _, err = proc.communicate()
        lines.append(f"pid {proc.pid} {' '.join(proc.args[3:])}: {(err or '')[-1500:]}")
    if log.exists():
        lines += log.read_text().splitlines()[-6:]
    return "\n".join(lines)


def _check(js, stores: CampaignStores, log: Path, killed: dict[int, float]) -> dict:
    doc = stores.get_campaign(NAME)
    assert doc["state"] == "stopped", doc["state"]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    # Each call's interval; a call cut by a SIGKILL ends at the kill.
    open_calls: dict[tuple[str, int], float] = {}
    intervals: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    ends: dict[str, list[int]] = defaultdict(list)
    for e in events:
        key = (e["cid"], e["pid"])
        if e["event"] == "start":
            open_calls[key] = e["t"]
        else:
            intervals[e["cid"]].append((open_calls.pop(key), e["t"], e["pid"]))
            ends[e["cid"]].append(e["pid"])
    for (cid, pid), t0 in open_calls.items():
        assert pid in killed, f"call of {cid} by {pid} never ended, and {pid} was not killed"
        intervals[cid].append((t0, killed[pid], pid))
    for cid, spans in intervals.items():
        spans.sort()
        busy_until, busy_pid = float("-inf"), None
        for t0, t1, pid in spans:
            assert t0 >= busy_until or pid == busy_pid, f"{cid}: {busy_pid} and {pid} asked at once"
            if t1 > busy_until:
                busy_until, busy_pid = t1, pid
    stored = Counter(
        d["metadata"]["candidate_id"]
        for d in js.docs_store.query({"metadata.campaign": NAME}, properties=["metadata"])
    )
    labels = stores.get_labels(NAME, "emt", ["status"])
    labelled = {lab["candidate_id"] for lab in labels}
    assert len(labels) == len(labelled), "a candidate has two labels"
    assert set(stored) == labelled and max(stored.values()) == 1, stored
    assert doc["n_oracle_calls"] == len(labelled)
    lost = 0
    for cid, pids in ends.items():
        # Every completed call but the stored one was cut off by a SIGKILL.
        assert all(p in killed for p in pids[:-1]), f"{cid} was computed again: {pids}"
        lost += len(pids) - 1
    assert set(ends) == labelled
    return {
        "oracle_calls": sum(len(p) for p in ends.values()),
        "labelled": len(labelled),
        "n_oracle_calls": doc["n_oracle_calls"],
        "lost_to_kills": lost,
    }


@pytest.mark.slow
@pytest.mark.parametrize("rep", range(REPETITIONS))
def test_three_processes_one_campaign_no_repeated_oracle_call(tmp_path, rep):
    out = run_once(tmp_path, seed=rep)
    assert out["labelled"] == out["n_oracle_calls"] == 8
    print(json.dumps({"rep": rep, **{k: v for k, v in out.items() if k != "codes"}}))
