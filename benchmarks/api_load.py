"""Load on loopback: 20 concurrent clients against the API and the dashboard for 60 s
while campaigns write to the same embedded store.

Setup, in a fresh embedded (montydb) store in a temporary folder:

* a synthetic campaign ``big`` of N candidates (default 20,000; as
  :mod:`benchmarks.dashboard_pages` fills it) for the table pages;
* a small finished Cu-Au EMT campaign ``done`` (a real run) for the status, plots,
  labels and page routes.

Then, at once:

* the server: ``alcampaign serve`` in its own process on 127.0.0.1 (a free port);
* a writer process: real campaigns (``load-0``, ``load-1``...) run back to back with
  jobflow ``run_locally`` into the same store until the end (enumeration, labels,
  models, campaign updates: the writes a running campaign makes);
* C client threads (default 20), each with its own keep-alive connection, cycling
  through a mix of routes (dashboard list, status, plots, candidate table pages, the
  collection API, the campaign page) until the deadline (default 60 s) or a request
  cap, whichever comes first.

Every request is counted: an error is a status other than 200 or a failed connection.
Prints one JSON object: requests, errors, p50/p99/max latency overall and per route,
the writer's campaigns and labels. Only 127.0.0.1 is contacted.

Usage: ``python benchmarks/api_load.py [--clients 20] [--seconds 60] [--n 20000]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
HOST = "127.0.0.1"  # loopback only
MAX_REQUESTS_PER_CLIENT = 100_000  # a bound on each client's loop besides the deadline


def _config(name: str, max_calls: int) -> dict:
    return {
        "name": name,
        "seed": 1,
        "system": {"structure": str(ROOT / "examples" / "cuau_fcc.cif")},
        "enumeration": {"max_size": 4},
        "features": {"cutoffs": [5.0]},
        "prescreen": {"enabled": False},
        "oracle": {
            "maker": "atomate2.ase.jobs.EmtRelaxMaker",
            "kwargs": {"relax_cell": False, "steps": 50},
            "fidelity": "emt",
        },
        "acquisition": {"rule": "max_variance", "batch_size": 2},
        "initial_design": {"n_initial": 4},
        "stopping": {"max_oracle_calls": max_calls, "rmse_target": 1e-4, "min_labels": 5},
    }


def run_campaign(store_file: Path, name: str, max_calls: int, folder: Path) -> None:
    """One real campaign to its stopping rule, into the store of ``store_file``."""
    from jobflow import run_locally

    from alcampaign.campaign.flows import campaign_flow
    from alcampaign.config import load_config
    from alcampaign.store.facade import job_store_from_spec
    from alcampaign.structures.enumeration import read_structure

    cfg_file = folder / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(_config(name, max_calls)))
    cfg = load_config(cfg_file)
    job_store = job_store_from_spec(yaml.safe_load(store_file.read_text()))
    job_store.connect()
    run_dir = folder / name
    run_dir.mkdir(exist_ok=True)
    flow = campaign_flow(cfg, read_structure(cfg.system.structure))
    run_locally(flow, store=job_store, root_dir=run_dir, log=False)


def writer(store_file: Path, deadline: float, folder: Path) -> None:
    """Campaigns back to back until ``deadline`` (``time.time()``); bounded loop."""
    for k in range(1000):
        if time.time() >= deadline:
            break
        run_campaign(store_file, f"load-{k}", 12, folder)
        print(json.dumps({"writer_done": f"load-{k}", "t": time.time()}), flush=True)


def _routes(n: int) -> list[tuple[str, str]]:
    """``(route name, URL)`` choices, each with its page parameters drawn later."""
    d = "/api/dashboard/campaigns"
    return [
        ("dashboard list", d),
        ("dashboard status", f"{d}/done/status"),
        ("dashboard plots", f"{d}/done/plots"),
        ("dashboard table page", f"{d}/big/candidates?per_page=50&page={{page}}"),
        ("dashboard table by energy", f"{d}/big/candidates?sort=chgnet_energy&page={{page}}"),
        ("api candidates page", "/api/candidates/?campaign=big&_per_page=50&_page={page}"),
        ("api candidates (writing)", "/api/candidates/?campaign=load-0"),
        ("api labels", "/api/labels/?campaign=done"),
        ("api campaigns", "/api/campaigns/"),
        ("campaign page", "/campaign/done"),
    ]


def client(port: int, deadline: float, seed: int, n: int, out: list) -> None:
    """One client: requests over one keep-alive connection until the deadline."""
    rng = np.random.default_rng(seed)
    routes = _routes(n)
    n_pages = max(1, -(-n // 50))
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.time() >= deadline:
            break
        name, url = routes[int(rng.integers(len(routes)))]
        url = url.format(page=int(rng.integers(1, n_pages + 1)))
        t0 = time.perf_counter()
        try:
            conn.request("GET", url)
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=120)
        out.append((name, time.perf_counter() - t0, ok))
    conn.close()


def _stats(samples: list[tuple[str, float, bool]]) -> dict:
    def summary(rows):
        t = np.array([r[1] for r in rows]) if rows else np.zeros(1)
        return {
            "requests": len(rows),
            "errors": sum(not r[2] for r in rows),
            "p50_s": round(float(np.percentile(t, 50)), 4),
            "p99_s": round(float(np.percentile(t, 99)), 4),
            "max_s": round(float(t.max()), 4),
        }

    per_route = {}
    for name in sorted({s[0] for s in samples}):
        per_route[name] = summary([s for s in samples if s[0] == name])
    return {**summary(samples), "per_route": per_route}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_up(port: int, proc: subprocess.Popen, limit: float = 120.0) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited: " + proc.stderr.read().decode()[-2000:])
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/api/heartbeat")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def main(clients: int = 20, seconds: float = 60.0, n: int = 20_000) -> dict:
    from dashboard_pages import _fill

    from alcampaign.config import embedded_store_spec
    from alcampaign.store.facade import CampaignStores, job_store_from_spec

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = embedded_store_spec(folder / "home")
        store_file = folder / "store.yaml"
        store_file.write_text(yaml.safe_dump(spec))
        job_store = job_store_from_spec(spec)
        job_store.connect()
        _fill(CampaignStores.from_job_store(job_store), n)
        run_campaign(store_file, "done", 10, folder)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        port = _free_port()
        server = subprocess.Popen(
            [
                *(sys.executable, "-c", "from alcampaign.cli import app; app()", "serve"),
                *("--store", str(store_file), "--host", HOST, "--port", str(port), "--poll", "0"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_up(port, server)
            deadline = time.time() + seconds
            write = subprocess.Popen(
                [sys.executable, __file__, "--writer", str(store_file), str(deadline), tmp],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            samples: list = []
            threads = [
                threading.Thread(target=client, args=(port, deadline, k, n, samples))
                for k in range(clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            written = write.communicate(timeout=600)[0].decode().splitlines()
        finally:
            server.terminate()
            server.wait(timeout=30)
        labels = job_store.additional_stores["labels"]
        n_labels = labels.count({"campaign": {"$regex": "^load-"}})
    return {
        "clients": clients,
        "seconds": seconds,
        "n_candidates": n,
        "campaigns_written": len([w for w in written if "writer_done" in w]),
        "labels_written": n_labels,
        **_stats(samples),
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer(Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--n", type=int, default=20_000, help="candidates of the big campaign")
    args = parser.parse_args()
    print(json.dumps(main(args.clients, args.seconds, args.n)))
