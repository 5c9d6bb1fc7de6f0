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

A worker killed mid-batch (kill -9, out of memory) breaks the pool: the batch job
fails after writing every answer that came back, and ``alcampaign resume`` finds those
answers in the job store (``_finished_answers``) and asks only the rest again.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tempfile
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from alcampaign.campaign.oracle import stored_answer

logger = logging.getLogger(__name__)


def _strip_ids(docs: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "_id"} for d in docs]


def _run_in_worker(
    job_dict: dict, store_names: list[str], threads: int, root: str
) -> tuple[str, dict[str, list[dict]] | None, str | None]:
    """Run one job in this worker against an in-memory JobStore; return its documents.

    Returns ``(uuid, {"docs": [...], "<additional store>": [...]}, error)``.
    """
    from alcampaign.campaign.resources import apply_threads

    apply_threads(threads)
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
    jobs: list, answers: list[dict], store, workers: int, threads: int
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

    Raises
    ------
    concurrent.futures.process.BrokenProcessPool
        A worker died; every answer that came back before is stored.
    """
    store_names = sorted(store.additional_stores)
    by_uuid = {a["job_uuid"]: a for a in answers}
    root = str(Path.cwd())
    payloads = [j.as_dict() for j in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_in_worker, p, store_names, threads, root) for p in payloads]
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
