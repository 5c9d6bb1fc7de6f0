"""The oracle jobs of one batch in several processes on this machine.

``run_locally`` runs a flow's jobs one after another, so a batch of 8 oracle
relaxations on a 16-core workstation took as long as on a laptop. With
``resources.workers`` (or ``run --workers N``) above one, the launch job hands the
batch's oracle jobs to :func:`run_oracle_batch` instead of adding them to the flow:

* a ``concurrent.futures.ProcessPoolExecutor`` (start method ``spawn``: the parent
  has torch's thread pools, which do not survive a ``fork``) runs each jobflow ``Job``
  with ``Job.run`` in a worker process that applies the thread policy
  (:func:`alcampaign.campaign.resources.apply_threads`);
* each worker runs its job against a private in-memory ``JobStore`` and sends back the
  documents the job wrote; the parent writes them into the campaign's JobStore as each
  job finishes. So workers need no database connection (nothing to serialise, no
  credentials, any store works, MemoryStore included), and the job documents, uuids,
  metadata and ``data`` blobs are exactly those ``run_locally`` would have stored;
* the answers go to the ingest job as the sequential flow's references would
  (energy, final structure, forces, stress; ``None`` for a failed job).
* the jobs are handed out largest cell first (:func:`largest_first`), so a batch of
  mixed cell sizes does not end with one long relaxation while the other workers idle.

A worker killed mid-batch (kill -9, out of memory) breaks the pool: the batch job
fails after writing every answer that came back, and ``alcampaign resume`` finds those
answers in the job store (``_finished_answers``) and asks only the rest again.

The pool outlives a batch. Starting a worker costs ~10 s on a 2-core machine (importing
jobflow, atomate2, torch and the oracle's module), as long as a short CHGNet relaxation:
a pool started per batch made 2 workers slower than one process (docs/benchmarks.md).
So one pool per (workers, threads) lives as long as the campaign's process, its workers
import the oracle's module once (the pool initializer), :func:`prewarm` starts them
while the campaign enumerates and prescreens, and a broken pool is replaced.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import multiprocessing as mp
import os
import tempfile
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from pymatgen.core import Structure

from alcampaign.campaign.oracle import stored_answer

logger = logging.getLogger(__name__)


_pools: dict[tuple[int, int], ProcessPoolExecutor] = {}


def _init_worker(threads: int, modules: tuple[str, ...]) -> None:
    """Pool initializer: the thread policy, then the oracle's imports, once per worker."""
    from alcampaign.campaign.resources import apply_threads

    apply_threads(threads)
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:  # the job itself reports a missing module, with its traceback
            logger.warning("worker could not import %s", module)


def _ready() -> int:
    return os.getpid()


def worker_pool(workers: int, threads: int, modules: tuple[str, ...] = ()) -> ProcessPoolExecutor:
    """The live pool of ``workers`` spawned processes with ``threads`` threads each.

    Created on first use (start method ``spawn``: the parent has torch's thread pools,
    which do not survive a ``fork``) and replaced when a dead worker has broken it.
    """
    key = (workers, threads)
    pool = _pools.get(key)
    if pool is None or getattr(pool, "_broken", False):
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads, tuple(modules)),
        )
        _pools[key] = pool
    return pool


def oracle_modules(oracle: dict) -> tuple[str, ...]:
    """The modules of an oracle config's Makers (``maker`` and ``cheap.maker``), which
    define the functions of the oracle jobs (:func:`oracle_module`)."""
    makers = [oracle.get("maker"), (oracle.get("cheap") or {}).get("maker")]
    return tuple(sorted({m.rpartition(".")[0] for m in makers if m and "." in m}))


def prewarm(workers: int, threads: int, modules: tuple[str, ...] = ()) -> None:
    """Start the pool's workers now (without waiting), so the first batch finds them ready."""
    if workers > 1 and modules:
        pool = worker_pool(workers, threads, modules)
        for _ in range(workers):
            pool.submit(_ready)


@atexit.register
def shutdown_pools() -> None:
    """Stop every worker pool of this process (also at interpreter exit)."""
    while _pools:
        _pools.popitem()[1].shutdown(wait=True, cancel_futures=True)


def _strip_ids(docs: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "_id"} for d in docs]


def _run_in_worker(
    job_dict: dict, store_names: list[str], root: str
) -> tuple[str, dict[str, list[dict]] | None, str | None]:
    """Run one job in this worker against an in-memory JobStore; return its documents.

    Returns ``(uuid, {"docs": [...], "<additional store>": [...]}, error)``.
    """
    from jobflow import Job, JobStore
    from maggma.stores import MemoryStore

    job = Job.from_dict(job_dict)
    store = JobStore(MemoryStore(), additional_stores={n: MemoryStore() for n in store_names})
    store.connect()
    workdir = tempfile.mkdtemp(prefix=f"oracle-{job.uuid}-", dir=root)
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        response = job.run(store)
    except Exception:
        return job.uuid, None, traceback.format_exc(limit=3)
    finally:
        os.chdir(previous)
    if any(getattr(response, k, None) is not None for k in ("replace", "addition", "detour")):
        return job.uuid, None, "the oracle Maker returned dynamic jobs; use resources.workers: 1"
    docs = {"docs": _strip_ids(list(store.docs_store.query({})))}
    for n, s in store.additional_stores.items():
        docs[n] = _strip_ids(list(s.query({})))
    return job.uuid, docs, None


def _write(store, docs: dict[str, list[dict]]) -> None:
    """Write one job's documents into the campaign's JobStore (as ``JobStore.update``)."""
    store.docs_store.update(docs["docs"], key=["uuid", "index"])
    for name, blobs in docs.items():
        if name != "docs" and blobs:
            store.additional_stores[name].update(blobs, key="blob_uuid")


def run_oracle_batch(
    jobs: list, answers: list[dict], store, workers: int, threads: int, balance: bool = True
) -> list[dict]:
    """Run oracle jobs in ``workers`` processes; fill and return their answers.

    Parameters
    ----------
    jobs
        jobflow ``Job`` objects (no input references: oracle jobs take a structure).
    answers
        One dict per job, in the same order (``candidate_id``, ``cheap``, ``job_uuid``);
        ``energy``/``structure``/``forces``/``stress`` are filled in from the outputs.
    store
        The campaign's ``JobStore``, into which every job's documents are written.
    workers, threads
        Processes, and torch/BLAS threads in each.
    balance
        Hand the jobs out largest cell first (:func:`largest_first`); ``False``: in the
        batch's order (the benchmark's comparison).

    Raises
    ------
    concurrent.futures.process.BrokenProcessPool
        A worker died; every answer that came back before is stored.
    """
    store_names = sorted(store.additional_stores)
    by_uuid = {a["job_uuid"]: a for a in answers}
    root = str(Path.cwd())
    order = largest_first(jobs) if balance else range(len(jobs))
    payloads = [jobs[i].as_dict() for i in order]
    modules = tuple(sorted({oracle_module(p) for p in payloads} - {None}))
    pool = worker_pool(workers, threads, modules)
    futures = [pool.submit(_run_in_worker, p, store_names, root) for p in payloads]
    for future in as_completed(futures):
        uuid, docs, error = future.result()
        answer = by_uuid[uuid]
        output = None
        if error is None:
            _write(store, docs)
            output = next((d.get("output") for d in docs["docs"] if d["uuid"] == uuid), None)
        else:
            logger.error("oracle job %s failed: %s", uuid, error.strip().splitlines()[-1])
        if isinstance(output, dict) and output.get("output"):
            answer.update(stored_answer(answer["candidate_id"], uuid, output))
        else:  # as a failed job reaches ingest in the sequential flow
            answer.update(energy=None, structure=None, forces=None, stress=None)
    return answers


def largest_first(jobs: list) -> list[int]:
    """The order to hand jobs to the pool: most atoms first (ties keep the batch order).

    The pool gives the next job to whichever worker frees first, so the batch ends when
    the last long job does; starting the long ones first (Graham's LPT rule, SIAM J.
    Appl. Math. 17, 416, 1969: within 4/3 of the best finish) keeps a large cell from
    starting last while the other workers idle. A job's cost is taken as its structure's
    size, the one predictor known before it runs (force evaluations scale with atoms).
    """

    def size(job) -> int:
        first = job.function_args[0] if job.function_args else None
        return len(first) if isinstance(first, Structure) else 0

    return sorted(range(len(jobs)), key=lambda i: -size(jobs[i]))


def oracle_module(job_dict: dict) -> str | None:
    """The module that defines a serialised job's function (a Maker's ``make``)."""
    function = job_dict.get("function")
    return function.get("@module") if isinstance(function, dict) else None
