"""jobflow jobs of a campaign.

Every job reaches the campaign collections through the JobStore that runs it
(``JobConfig(expose_store=True)`` and ``CURRENT_JOB.store``), so a remote worker uses
its own store configuration and no connection string enters a job document. Jobs take
the campaign *name*; the config lives in the campaign document.

The loop (see DESIGN.md)::

    register -> enumerate -> prescreen -> initial_design -> launch(0)
    launch(k): mirror the open questions onto the candidates -> [oracles -> ingest]
               -> controller(k)
    controller(k): (under the campaign lease) read -> decide -> write: stop
                   | record acquisitions -> launch(k+1)

The controller's step lives in :mod:`alcampaign.campaign.controller` (read the stores,
the pure :func:`alcampaign.science.learning.decide`, build and write the documents);
the documents are the models of :mod:`alcampaign.campaign.documents`, the oracle jobs
come from :mod:`alcampaign.campaign.oracle` and answers are stored by
:mod:`alcampaign.campaign.ingest` (shared with on-the-fly MD).

The controller reads only small documents (feature blocks, labels, the campaign
document with its ``acquisitions``), so its decision time does not grow with the
candidates collection; everything that touches every candidate (the state mirror, the
structures for the oracles) happens in the launch job.

Each job is idempotent, so :func:`alcampaign.campaign.flows.resume_flow` can rerun the pipeline
after a crash: candidates are inserted only once, only unscreened candidates are
screened, acquisitions recorded but never labelled are labelled before any new
question is asked (from the job store, without a new oracle call, when the oracle job
had finished), and a label is never stored twice.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
from jobflow import CURRENT_JOB, Flow, Response, job
from monty.json import MontyDecoder, MontyEncoder
from pymatgen.core import Structure

from alcampaign.campaign import controller as _controller
from alcampaign.campaign import lease
from alcampaign.campaign.context import INGEST_JOB, STORE_JOB, job_stores, load_campaign
from alcampaign.campaign.documents import AcquisitionEntry, Candidate
from alcampaign.campaign.ingest import ingest_answers, label_for, register
from alcampaign.campaign.oracle import (  # noqa: F401  (check_oracle_elements: re-exported)
    answer_refs,
    check_oracle_elements,
    import_maker,
    oracle_job,
    stored_answer,
)
from alcampaign.campaign.resources import resolve as resolve_resources
from alcampaign.config import CampaignConfig
from alcampaign.science import learning
from alcampaign.science.features import ClusterVectorFeaturizer
from alcampaign.science.validation import AUDIT_RULE, audit_sample
from alcampaign.store.facade import CampaignStores, now
from alcampaign.structures.enumeration import candidate_id, orderings_from_config

logger = logging.getLogger("alcampaign")

__all__ = [
    "INGEST_JOB",
    "STORE_JOB",
    "controller",
    "enumerate_candidates",
    "featurizer_for",
    "import_maker",
    "ingest_labels",
    "initial_design",
    "label_flow",
    "launch_acquisitions",
    "prescreen_candidates",
    "register_campaign",
]


def featurizer_for(config: CampaignConfig, parent) -> ClusterVectorFeaturizer:
    """The featurizer the config asks for, on the campaign's parent lattice."""
    return ClusterVectorFeaturizer(parent.atoms, parent.chemical_symbols, config.features.cutoffs)


@job(config=STORE_JOB)
def register_campaign(config: dict, parent: dict) -> dict:
    """Create the campaign document (config and parent structure) unless it exists."""
    return register(job_stores(), config, parent=parent)


def _candidate_documents(name: str, parent, orderings, features: np.ndarray) -> list[dict]:
    """One :class:`~alcampaign.campaign.documents.Candidate` per distinct ordering."""
    docs, seen = [], set()
    for ordering, x in zip(orderings, features, strict=True):
        cid = candidate_id(ordering.structure)
        if cid in seen:
            continue
        seen.add(cid)
        s = ordering.structure
        doc = Candidate(
            campaign=name,
            candidate_id=cid,
            structure=s.as_dict(),
            formula=s.composition.reduced_formula,
            composition={el.symbol: amt for el, amt in s.composition.items()},
            n_sites=len(s),
            source={
                "parent": parent.source,
                "supercell_size": ordering.size,
                "backend": ordering.backend,
            },
            features=x.tolist(),
            prescreen=None,
            state="pool",
            acquisition=None,
        )
        docs.append(doc.to_store())
    return docs


@job(config=STORE_JOB)
def enumerate_candidates(name: str, after: Any = None) -> dict:
    """Enumerate the orderings of the parent and store them as candidates with features."""
    stores = job_stores()
    doc, config = load_campaign(stores, name)
    t0 = time.perf_counter()
    parent, orderings = orderings_from_config(config, Structure.from_dict(doc["parent"]))
    featurizer = featurizer_for(config, parent)
    features = featurizer.featurize([o.atoms for o in orderings])
    docs = _candidate_documents(name, parent, orderings, features)
    n_new = stores.insert_candidates(name, docs)
    summary = {
        "n_candidates": len(docs),
        "n_new": n_new,
        "n_features": int(features.shape[1]),
        "featurizer": featurizer.describe(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    stores.update_campaign(name, {"enumeration": summary})
    logger.info(
        "enumerated %d candidates (%d new), %d features each", len(docs), n_new, features.shape[1]
    )
    return summary


@job(config=STORE_JOB)
def prescreen_candidates(name: str, after: Any = None) -> dict:
    """CHGNet energies, forces, magmoms and embeddings of every unscreened candidate."""
    from alcampaign.chgnet.prescreen import chgnet_prescreen

    stores = job_stores()
    _, config = load_campaign(stores, name)
    if not config.prescreen.enabled:
        return {"n_screened": 0}
    t0 = time.perf_counter()
    todo = stores.candidate_table(name, ["structure"], {"prescreen": None})
    results = chgnet_prescreen(
        [Structure.from_dict(d["structure"]) for d in todo],
        batch_size=config.prescreen.batch_size,
        forces=config.prescreen.forces,
        relax_steps=config.prescreen.relax_steps,
        workers=config.prescreen.workers,
    )
    stores.update_candidates(
        name, {d["candidate_id"]: {"prescreen": r} for d, r in zip(todo, results, strict=True)}
    )
    screened = [
        d
        for d in stores.candidate_table(name, ["prescreen.energy_per_atom", "prescreen.embedding"])
        if d.get("prescreen")
    ]
    # The embedding block (the controller's CHGNet features) and the energy block (the
    # dashboard's table), completed for every screened candidate.
    ids = [d["candidate_id"] for d in screened]
    stores.complete_block(name, "embedding", ids, [d["prescreen"]["embedding"] for d in screened])
    stores.complete_block(
        name,
        "prescreen_energy",
        ids,
        [[d["prescreen"]["energy_per_atom"]] for d in screened],
    )
    energies = np.array([d["prescreen"]["energy_per_atom"] for d in screened])
    summary = {"n_screened": len(todo), "seconds": round(time.perf_counter() - t0, 2)}
    if energies.size:
        summary.update(
            energy_min=float(energies.min()),
            energy_max=float(energies.max()),
            energy_mean=float(energies.mean()),
        )
    stores.update_campaign(name, {"prescreen": summary})
    logger.info("prescreened %d candidates with CHGNet in %.1f s", len(todo), summary["seconds"])
    return summary


@job(config=STORE_JOB)
def initial_design(name: str, after: Any = None) -> Response | dict:
    """Choose the first labels at random, or pick the campaign up where it stopped."""
    stores = job_stores()
    doc, config = load_campaign(stores, name)
    if doc["state"] != "running":
        return {"skipped": f"campaign is {doc['state']}"}
    if doc.get("acquisitions"):
        # Resuming: repair candidate states a crash left behind their labels.
        stores.reconcile_states(
            name,
            config.oracle.fidelity,
            config.oracle.cheap.fidelity if config.oracle.cheap else None,
        )
    if doc.get("history"):
        # Resuming: continue at the iteration after the last recorded decision.
        return Response(addition=_controller_job(name, doc["history"][-1]["iteration"] + 1))
    if doc.get("acquisitions"):
        # The initial design was recorded before a crash: label it, then decide.
        return Response(addition=_launch_job(name, 0))
    ids = stores.read_block(name, "features")[0]
    rng = np.random.default_rng(config.seed)
    comps, cheap = None, None
    got, amounts, _ = stores.read_block(name, "composition")
    if got == ids:
        comps = np.asarray(amounts, dtype=float)
        comps = comps / comps.sum(axis=1, keepdims=True)
    if config.prescreen.enabled:
        got, energies, _ = stores.read_block(name, "prescreen_energy")
        if got == ids:
            cheap = np.asarray(energies, dtype=float)[:, 0]
    picked, n_end = learning.initial_design(
        config.initial_design.n_initial, len(ids), rng, comps, cheap,
        config.initial_design.end_members,
    )
    n = len(picked)
    # The audit sample: random too, never trained on, never offered to a rule.
    audit = audit_sample(len(ids), config.stopping.audit_size, config.seed, picked)
    stores.record_acquisitions(
        name,
        [
            AcquisitionEntry(
                candidate_id=ids[i],
                fidelity=config.oracle.fidelity,
                external=config.oracle.external,
                iteration=0,
                rule=rule,
                score=0.0,
                time=now(),
            ).to_store()
            for rule, i in [
                *(("initial_end_member" if k < n_end else "initial_random", i)
                  for k, i in enumerate(picked)),
                *((AUDIT_RULE, i) for i in audit),
            ]
        ],
    )
    logger.info(
        "initial design: %d end members, %d random candidates, %d audit",
        n_end, n - n_end, audit.size,
    )
    return Response(addition=_launch_job(name, 0))


def _controller_job(name: str, iteration: int, after: Any = None):
    job_ = controller(name, iteration, after=after)
    job_.name = f"controller {name} {iteration}"
    return job_


def _launch_job(name: str, iteration: int):
    job_ = launch_acquisitions(name, iteration)
    job_.name = f"launch {name} {iteration}"
    return job_


@job(config=STORE_JOB)
def launch_acquisitions(name: str, iteration: int) -> Response | dict:
    """Put the open questions to their oracles, then hand over to ``controller(iteration)``.

    Mirrors every open acquisition onto its candidate (``acquired``, or ``requested``
    for an external oracle), so that ``status``, ``query`` and ``export`` see them.
    Questions for a Maker become oracle jobs followed by the ingest job and the
    controller; an answer a finished oracle job left in the job store (a crash before
    its ingest) is taken from there instead of asking again. Questions for an external
    oracle wait for ``alcampaign export`` / ``ingest``: with nothing to run in the
    workflow the campaign goes to state ``waiting`` until ``alcampaign resume``.
    """
    stores = job_stores()
    doc, config = load_campaign(stores, name)
    if doc["state"] != "running":
        return {"skipped": f"campaign is {doc['state']}"}
    open_ = stores.open_acquisitions(doc)
    stores.mirror_acquisitions(name, open_)
    in_workflow = [a for a in open_ if not a["external"]]
    if in_workflow:
        return Response(addition=label_flow(name, config, stores, in_workflow, iteration))
    if open_:
        stores.update_campaign(name, {"state": "waiting"})
        logger.info(
            "waiting for %d external answers: 'alcampaign export %s --out DIR', then "
            "'alcampaign ingest' and 'alcampaign resume'",
            len(open_),
            name,
        )
        return {"waiting": len(open_)}
    return Response(addition=_controller_job(name, iteration))


def _finished_answers(name: str, requests: list[dict]) -> dict[tuple[str, str], dict]:
    """Answers of oracle jobs that finished but were never ingested, from the job store.

    Found by the metadata every oracle job carries (campaign, candidate id, fidelity);
    the latest completed output wins.
    """
    wanted = {(a["candidate_id"], a["fidelity"]): a for a in requests}
    latest: dict[tuple[str, str], dict] = {}
    # One query for the whole batch (each query scans the docs store on montydb).
    for d in CURRENT_JOB.store.query(
        {
            "metadata.campaign": name,
            "metadata.candidate_id": {"$in": sorted({cid for cid, _ in wanted})},
        },
        load=True,
    ):
        key = (d["metadata"]["candidate_id"], d["metadata"].get("fidelity"))
        out = d.get("output")
        if key not in wanted or not (isinstance(out, dict) and out.get("output")):
            continue
        if key not in latest or str(d.get("completed_at")) > str(latest[key].get("completed_at")):
            latest[key] = d
    return {
        key: stored_answer(key[0], d["uuid"], d["output"], cheap=wanted[key]["cheap"])
        for key, d in latest.items()
    }


def label_flow(
    name: str,
    config: CampaignConfig,
    stores: CampaignStores,
    requests: list[dict],
    next_iteration: int,
) -> Flow:
    """Oracle jobs for open acquisitions, the ingest job, and ``controller(next_iteration)``.

    The answers are passed by reference to the task-document fields every atomate2
    relaxation or static task document has (:func:`~alcampaign.campaign.oracle.answer_refs`),
    so any atomate2 Maker can be the oracle.
    """
    makers = {}
    if not config.oracle.external:
        makers[False] = import_maker(config.oracle.maker, config.oracle.kwargs)
    if config.oracle.cheap is not None:
        makers[True] = import_maker(config.oracle.cheap.maker, config.oracle.cheap.kwargs)
    finished = _finished_answers(name, requests)
    todo = [a for a in requests if (a["candidate_id"], a["fidelity"]) not in finished]
    docs = {
        d["candidate_id"]: d
        for d in stores.candidate_table(
            name, ["structure"], {"candidate_id": {"$in": [a["candidate_id"] for a in todo]}}
        )
    }
    jobs, answers = [], list(finished.values())
    for a in todo:
        cid, cheap = a["candidate_id"], a["cheap"]
        structure = Structure.from_dict(docs[cid]["structure"])
        oracle = oracle_job(makers[cheap], structure, name, cid, a["fidelity"])
        jobs.append(oracle)
        answers.append(answer_refs(oracle, cid, cheap=cheap))
    if finished:
        logger.info("%d answers recovered from finished oracle jobs", len(finished))
    resources = resolve_resources(config.resources)
    if resources.workers > 1 and len(jobs) > 1:
        # One job runs the batch in worker processes; ingest reads what it returns.
        n_done = len(finished)
        keys = ("candidate_id", "cheap", "job_uuid")
        batch = oracle_batch(
            [json.dumps(j.as_dict(), cls=MontyEncoder) for j in jobs],
            [{k: a[k] for k in keys} for a in answers[n_done:]],
            resources.workers,
            resources.threads_per_process,
        )
        batch.name = f"oracle batch {name} ({len(jobs)} jobs, {resources.workers} workers)"
        jobs = [batch]
        answers = [*answers[:n_done], *[batch.output[i] for i in range(len(todo))]]
    ingest = ingest_labels(name, answers)
    ingest.name = f"ingest {name}"
    # The next controller depends on the ingest job, so it runs after every label is in.
    following = _controller_job(name, next_iteration, after=ingest.output)
    return Flow([*jobs, ingest, following], name=f"{name} labels")


@job(config=STORE_JOB)
def oracle_batch(jobs: list[str], answers: list[dict], workers: int, threads: int) -> list:
    """Run oracle jobs in ``workers`` processes (:mod:`alcampaign.campaign.parallel`).

    The jobs come as JSON text: as objects, jobflow would take them for dependencies.
    ``MontyDecoder`` turns the text back into ``Job`` objects.
    """
    from alcampaign.campaign.parallel import run_oracle_batch

    return run_oracle_batch(
        [json.loads(j, cls=MontyDecoder) for j in jobs],
        answers,
        CURRENT_JOB.store,
        workers,
        threads,
    )


@job(config=INGEST_JOB)
def ingest_labels(name: str, answers: list[dict]) -> dict:
    """Store the oracles' answers as labels and move their candidates on.

    An answer without an energy (its oracle job failed) is stored with status
    ``failed``; its candidate leaves the pool of that fidelity for good, so it is never
    asked again.
    """
    stores = job_stores()
    doc, config = load_campaign(stores, name)
    fidelities = {False: config.oracle}
    if config.oracle.cheap is not None:
        fidelities[True] = config.oracle.cheap
    asked = {(a["candidate_id"], a["fidelity"]): a for a in doc.get("acquisitions") or []}
    labels = []
    for a in answers:
        cheap = bool(a.get("cheap"))
        fid = fidelities[cheap]
        iteration = asked.get((a["candidate_id"], fid.fidelity), {}).get("iteration")
        labels.append((label_for(name, a, fid, iteration), cheap))
    return ingest_answers(stores, name, labels, config.oracle.fidelity)


def lease_owner() -> str:
    """``host:pid:job`` of the caller: unique per controller, and tells whether it lives."""
    job_ = CURRENT_JOB.job
    return lease.new_owner(str(job_.uuid) if job_ else None)


@job(config=STORE_JOB)
def controller(name: str, iteration: int, after: Any = None) -> Response | dict:
    """Read the stores, update the model, judge the stopping rules, and stop or go on.

    Runs :func:`alcampaign.campaign.controller.controller_step` under the campaign
    lease, so two controllers never both acquire; a controller whose iteration another
    one decided already does nothing. Records the model with its
    domain-of-applicability flags (``models``), the decision with metrics, criteria and
    diversity (the campaign ``history``) and, when going on, the acquisitions, in one
    update of the campaign document, before it adds ``launch(iteration + 1)``. With
    external questions open and no new answer it only records ``waiting``.
    """
    out = _controller.decide_under_lease(job_stores(), name, iteration, lease_owner())
    if "launch" in out:
        return Response(addition=_launch_job(name, out["launch"]))
    return out
