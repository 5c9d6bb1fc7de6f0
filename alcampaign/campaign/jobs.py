"""jobflow jobs of a campaign.

Every job reaches the campaign collections through the JobStore that runs it
(``JobConfig(expose_store=True)`` and ``CURRENT_JOB.store``), so a remote worker uses
its own store configuration and no connection string enters a job document. Jobs take
the campaign *name*; the config lives in the campaign document.

The loop (see DESIGN.md)::

    register -> enumerate -> prescreen -> initial_design -> launch(0)
    launch(k): mirror the open questions onto the candidates -> [oracles -> ingest]
               -> controller(k)
    controller(k): (under the campaign lease) fit, judge -> stop
                   | record acquisitions -> launch(k+1)

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

import importlib
import logging
import os
import socket
import time
from typing import Any
from uuid import uuid4

import numpy as np
from jobflow import CURRENT_JOB, Flow, JobConfig, Maker, OnMissing, Response, job
from pymatgen.core import Structure
from threadpoolctl import threadpool_limits

from alcampaign.config import CampaignConfig, ConfigError, stopping_thresholds
from alcampaign.science import learning
from alcampaign.science.features import ClusterVectorFeaturizer
from alcampaign.science.stopping import METRIC_NAMES, judge, judge_missing_ground_states
from alcampaign.store.facade import (
    CampaignStores,
    acquisition_entry,
    answered_state,
    label_document,
    now,
)
from alcampaign.structures.enumeration import candidate_id, orderings_from_config

logger = logging.getLogger("alcampaign")

STORE_JOB = JobConfig(expose_store=True)
# The ingest job must run even when an oracle job failed: its missing outputs
# resolve to None and the label is recorded as failed.
INGEST_JOB = JobConfig(expose_store=True, on_missing_references=OnMissing.NONE)


def _stores() -> CampaignStores:
    store = CURRENT_JOB.store
    if store is None:
        raise RuntimeError("campaign jobs must run with expose_store=True")
    from alcampaign.campaign.managers import campaign_job_store  # jobflow-remote: $ALCAMPAIGN_STORE

    return CampaignStores.from_job_store(campaign_job_store(store))


def _campaign(stores: CampaignStores, name: str) -> tuple[dict, CampaignConfig]:
    doc = stores.get_campaign(name)
    if doc is None:
        raise ValueError(f"no campaign named {name!r} in this store")
    return doc, CampaignConfig.model_validate(doc["config"])


def import_maker(path: str, kwargs: dict[str, Any]) -> Maker:
    """Instantiate an oracle Maker from its import path and keyword arguments.

    Raises
    ------
    ConfigError
        The path does not import, is not a Maker, or rejects the arguments.
    """
    module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"oracle.maker: cannot import {path!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Maker)):
        raise ConfigError(f"oracle.maker: {path!r} is not a jobflow Maker class")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"oracle.kwargs: {path} rejects them ({exc})") from None


def check_oracle_elements(maker: Maker, elements: list[str]) -> None:
    """Refuse elements an oracle cannot handle, where that can be known in advance.

    Known here: ASE's EMT (its parameter table) and CHGNet force fields (the model's
    element embedding). Other oracles are trusted.

    Raises
    ------
    ConfigError
        Naming the oracle and the elements.
    """
    name = type(maker).__name__
    unknown: list[str] = []
    if "Emt" in name or "EMT" in name:
        from ase.calculators.emt import parameters

        unknown = [el for el in elements if el not in parameters]
    elif str(getattr(maker, "force_field_name", "")).upper().endswith("CHGNET"):
        from alcampaign.chgnet.prescreen import check_elements, load_chgnet

        try:
            check_elements(elements, load_chgnet())
        except ValueError as exc:
            unknown = [str(exc)]
    if unknown:
        raise ConfigError(
            f"oracle {name} cannot compute {', '.join(unknown)}; choose another "
            "oracle.maker or change the structure"
        )


def featurizer_for(config: CampaignConfig, parent) -> ClusterVectorFeaturizer:
    """The featurizer the config asks for, on the campaign's parent lattice."""
    return ClusterVectorFeaturizer(parent.atoms, parent.chemical_symbols, config.features.cutoffs)


@job(config=STORE_JOB)
def register_campaign(config: dict, parent: dict) -> dict:
    """Create the campaign document (config and parent structure) unless it exists."""
    stores = _stores()
    name = config["name"]
    if not isinstance(parent, dict):  # FireWorks decodes MSON dicts into objects
        parent = parent.as_dict()
    if stores.get_campaign(name) is None:
        stores.create_campaign(name, config, parent=parent)
    return {"name": name}


@job(config=STORE_JOB)
def enumerate_candidates(name: str, after: Any = None) -> dict:
    """Enumerate the orderings of the parent and store them as candidates with features."""
    stores = _stores()
    doc, config = _campaign(stores, name)
    t0 = time.perf_counter()
    parent, orderings = orderings_from_config(config, Structure.from_dict(doc["parent"]))
    featurizer = featurizer_for(config, parent)
    features = featurizer.featurize([o.atoms for o in orderings])
    docs, seen = [], set()
    for ordering, x in zip(orderings, features, strict=True):
        cid = candidate_id(ordering.structure)
        if cid in seen:
            continue
        seen.add(cid)
        s = ordering.structure
        docs.append(
            {
                "campaign": name,
                "candidate_id": cid,
                "structure": s.as_dict(),
                "formula": s.composition.reduced_formula,
                "composition": {el.symbol: amt for el, amt in s.composition.items()},
                "n_sites": len(s),
                "source": {
                    "parent": parent.source,
                    "supercell_size": ordering.size,
                    "backend": ordering.backend,
                },
                "features": x.tolist(),
                "prescreen": None,
                "state": "pool",
                "acquisition": None,
            }
        )
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

    stores = _stores()
    _, config = _campaign(stores, name)
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
    stores = _stores()
    doc, config = _campaign(stores, name)
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
    comps, cheap = _compositions(stores, name, ids), None
    got, energies, _ = stores.read_block(name, "prescreen_energy")
    if got == ids:
        cheap = np.asarray(energies, dtype=float)[:, 0]
    picked, n_end = learning.initial_design(config, len(ids), rng, comps, cheap)
    n = len(picked)
    stores.record_acquisitions(
        name,
        [
            acquisition_entry(
                ids[i],
                config.oracle.fidelity,
                0,
                "initial_end_member" if k < n_end else "initial_random",
                0.0,
                external=config.oracle.external,
            )
            for k, i in enumerate(picked)
        ],
    )
    logger.info("initial design: %d end members and %d random candidates", n_end, n - n_end)
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
    stores = _stores()
    doc, config = _campaign(stores, name)
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
    found: dict[tuple[str, str], dict] = {}
    for key, d in latest.items():
        out = d["output"]
        found[key] = {
            "candidate_id": key[0],
            "cheap": wanted[key]["cheap"],
            "job_uuid": d["uuid"],
            "energy": out["output"].get("energy"),
            "structure": out.get("structure"),
            "forces": out["output"].get("forces"),
            "stress": out["output"].get("stress"),
        }
    return found


def label_flow(
    name: str,
    config: CampaignConfig,
    stores: CampaignStores,
    requests: list[dict],
    next_iteration: int,
) -> Flow:
    """Oracle jobs for open acquisitions, the ingest job, and ``controller(next_iteration)``.

    The answers are passed by reference to the task-document fields every atomate2
    relaxation or static task document has (``output.energy``, ``structure``,
    ``output.forces``, ``output.stress``), so any atomate2 Maker can be the oracle.
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
        cid, cheap, fidelity = a["candidate_id"], a["cheap"], a["fidelity"]
        oracle = makers[cheap].make(Structure.from_dict(docs[cid]["structure"]))
        oracle.name = f"{fidelity} {cid}"
        oracle.update_metadata({"campaign": name, "candidate_id": cid, "fidelity": fidelity})
        jobs.append(oracle)
        answers.append(
            {
                "candidate_id": cid,
                "cheap": cheap,
                "job_uuid": oracle.uuid,
                "energy": oracle.output.output.energy,
                "structure": oracle.output.structure,
                "forces": oracle.output.output.forces,
                "stress": oracle.output.output.stress,
            }
        )
    if finished:
        logger.info("%d answers recovered from finished oracle jobs", len(finished))
    ingest = ingest_labels(name, answers)
    ingest.name = f"ingest {name}"
    # The next controller depends on the ingest job, so it runs after every label is in.
    following = _controller_job(name, next_iteration, after=ingest.output)
    return Flow([*jobs, ingest, following], name=f"{name} labels")


@job(config=INGEST_JOB)
def ingest_labels(name: str, answers: list[dict]) -> dict:
    """Store the oracles' answers as labels and move their candidates on.

    An answer without an energy (its oracle job failed) is stored with status
    ``failed``; its candidate leaves the pool of that fidelity for good, so it is never
    asked again.
    """
    stores = _stores()
    doc, config = _campaign(stores, name)
    fidelities = {False: config.oracle}
    if config.oracle.cheap is not None:
        fidelities[True] = config.oracle.cheap
    asked = {(a["candidate_id"], a["fidelity"]): a for a in doc.get("acquisitions") or []}
    labels = []
    moved: dict[tuple[bool, str], list[str]] = {}
    for a in answers:
        cid, cheap = a["candidate_id"], bool(a.get("cheap"))
        fid = fidelities[cheap]
        structure = a.get("structure")
        if isinstance(structure, dict):
            structure = Structure.from_dict(structure)
        energy = a.get("energy")
        ok = energy is not None and structure is not None
        label = label_document(
            name,
            cid,
            fid.fidelity,
            oracle={"maker": fid.maker, "kwargs": fid.kwargs},
            cost=fid.cost,
            iteration=asked.get((cid, fid.fidelity), {}).get("iteration"),
            job_uuid=a.get("job_uuid"),
            energy_per_atom=float(energy) / len(structure) if ok else None,
            structure=structure,
            forces=a.get("forces"),
            stress=a.get("stress"),
            error="the oracle job produced no energy (it failed)",
        )
        moved.setdefault((cheap, answered_state(label["status"])), []).append(cid)
        labels.append(label)
    n_new = stores.add_labels(labels)
    for (cheap, state), cids in moved.items():
        stores.set_state(name, cids, state, cheap=cheap)
    n_calls, _ = stores.update_counts(name, config.oracle.fidelity)
    n_failed = sum(len(v) for (_, st), v in moved.items() if st == "failed")
    logger.info(
        "ingested %d answers (%d failed); %d oracle calls so far", len(labels), n_failed, n_calls
    )
    return {"n_new": n_new, "n_failed": n_failed, "n_oracle_calls": n_calls}


# A decision takes seconds; the lease outlives a stuck holder on another host by this
# much, while a dead holder on this host is recognised at once.
LEASE_TTL = 600.0
LEASE_WAIT = 120.0


def lease_owner() -> str:
    """``host:pid:job`` of the caller: unique per controller, and tells whether it lives."""
    job_ = CURRENT_JOB.job
    return f"{socket.gethostname()}:{os.getpid()}:{job_.uuid if job_ else uuid4()}"


def _owner_dead(owner: str) -> bool:
    """True when ``owner`` ran on this host in a process that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def take_lease(stores: CampaignStores, name: str, owner: str, wait: float | None = None) -> bool:
    """Take the campaign lease, waiting up to ``wait`` seconds (default ``LEASE_WAIT``)
    for a live holder and breaking the lease of a dead one (a controller killed on this
    host)."""
    deadline = time.monotonic() + (LEASE_WAIT if wait is None else wait)
    while not stores.acquire_lease(name, owner, LEASE_TTL):
        holder = ((stores.get_campaign(name) or {}).get("lease") or {}).get("owner")
        if holder and _owner_dead(holder):
            logger.warning("breaking the lease of %s (its process is gone)", holder)
            stores.release_lease(name, holder)
            continue
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _compositions(stores: CampaignStores, name: str, ids: list[str]) -> np.ndarray | None:
    """Atomic fractions of the candidates in the order of ``ids`` (None if unknown)."""
    got, amounts, _ = stores.read_block(name, "composition")
    if got != ids:
        return None
    amounts = np.asarray(amounts, dtype=float)
    return amounts / amounts.sum(axis=1, keepdims=True)


def _hull_estimate(
    config: CampaignConfig, stores, name, ids, fitted, X, good, dear_ok, rng
) -> tuple[np.ndarray, learning.GroundStateEstimate, np.ndarray] | None:
    """Sampled hulls (ground_state rule or missing_ground_states stopping), else None."""
    wanted = (
        config.acquisition.rule == "ground_state"
        or config.stopping.missing_ground_states is not None
    )
    if not wanted or fitted is None or fitted.multi_fidelity:
        return None
    comps = _design_block(stores, name, "composition", ids)
    comps = comps / comps.sum(axis=1, keepdims=True)
    row = {cid: i for i, cid in enumerate(ids)}
    labels = np.full(len(ids), np.nan)
    for lab in good:
        labels[row[lab["candidate_id"]]] = lab["energy_per_atom"]
    members = np.flatnonzero(dear_ok | np.isfinite(labels))
    estimate = learning.ground_states(config, fitted, X, labels, comps, members, rng)
    return members, estimate, labels


def _design_block(stores: CampaignStores, name: str, kind: str, ids: list[str]) -> np.ndarray:
    """A block's values in the order of ``ids``, rebuilt once if its rows disagree."""
    got, values, _ = stores.read_block(name, kind)
    if got != ids:
        stores.delete_block(name, kind)
        got, values, _ = stores.read_block(name, kind)
    if got != ids:
        raise ValueError(
            f"campaign {name}: {len(set(ids) - set(got))} candidates have no {kind} "
            "(an unfinished prescreen?): run 'alcampaign resume' to complete it"
        )
    return values


def _store_hull(stores: CampaignStores, name: str, iteration: int, ids, members, estimate) -> None:
    """P(on hull) and the mean hull distance of every candidate, as one block.

    Columns ``p_ground_state`` and ``hull_distance`` (eV/atom), ``nan`` for candidates
    outside the hulls (failed ones); ``query``, ``report`` and the dashboard read it.
    """
    values = np.full((len(ids), 2), np.nan)
    values[members, 0] = estimate.p_on_hull
    values[members, 1] = estimate.hull_distance
    stores.delete_block(name, "ground_states")
    stores.write_block(name, "ground_states", ids, values, ["p_ground_state", "hull_distance"])
    stores.update_campaign(
        name,
        {
            "ground_states": {
                "iteration": iteration,
                "expected_missing": estimate.expected_missing,
                "std_error": estimate.missing_std_error,
                "n_samples": estimate.n_samples,
            }
        },
    )


def read_ground_states(stores: CampaignStores, name: str) -> dict[str, tuple[float, float]]:
    """The latest ``p_ground_state`` and ``hull_distance`` of every candidate (empty when
    the campaign samples no hulls)."""
    if not stores.block_ids(name, "ground_states"):
        return {}
    ids, values, columns = stores.read_block(name, "ground_states")
    p, d = columns.index("p_ground_state"), columns.index("hull_distance")
    return {
        cid: (None if np.isnan(v[p]) else float(v[p]), None if np.isnan(v[d]) else float(v[d]))
        for cid, v in zip(ids, values, strict=True)
    }


@job(config=STORE_JOB)
def controller(name: str, iteration: int, after: Any = None) -> Response | dict:
    """Read the stores, update the model, judge the stopping rules, and stop or go on.

    Runs under the campaign lease, so two controllers never both acquire; a
    controller whose iteration another one decided already does nothing. Records the
    model with its domain-of-applicability flags (``models``), the decision with
    metrics, criteria and diversity (the campaign ``history``) and, when going on, the
    acquisitions, in one update of the campaign document, before it adds
    ``launch(iteration + 1)``. With external questions open and no new answer it only
    records ``waiting``.
    """
    return decide_under_lease(_stores(), name, iteration, lease_owner())


def decide_under_lease(
    stores: CampaignStores, name: str, iteration: int, owner: str
) -> Response | dict:
    """The controller's work for ``owner``: take the lease, decide, give it back."""
    if not take_lease(stores, name, owner):
        logger.warning("controller %d of %s: another controller holds the lease", iteration, name)
        return {"skipped": "another controller holds the campaign lease"}
    try:
        # One BLAS thread: the decision's matrices are small, and OpenBLAS's threads
        # made the evidence fits 15x slower on a busy 2-core machine.
        with threadpool_limits(limits=1, user_api="blas"):
            return _decide(stores, name, iteration)
    finally:
        stores.release_lease(name, owner)


def _decide(stores: CampaignStores, name: str, iteration: int) -> Response | dict:
    doc, config = _campaign(stores, name)
    if doc["state"] != "running":
        return {"skipped": f"campaign is {doc['state']}"}
    if any(h["iteration"] >= iteration for h in doc.get("history") or []):
        return {"skipped": f"iteration {iteration} was decided already"}
    t0 = time.perf_counter()
    labels = stores.get_labels(
        name, properties=["candidate_id", "fidelity", "status", "energy_per_atom", "cost"]
    )
    open_ = stores.open_acquisitions(doc, labels)
    if any(not a["external"] for a in open_):
        # Asked but never answered (a crash or a resume): answer them first.
        logger.info("iteration %d: %d acquisitions await their labels", iteration, len(open_))
        return Response(addition=_launch_job(name, iteration))
    outstanding = [a["candidate_id"] for a in open_]
    history_before = doc.get("history") or []
    answers_before = history_before[-1].get("n_answers", 0) if history_before else 0
    if outstanding and len(labels) == answers_before:
        # External questions unanswered and nothing new to learn from: keep waiting.
        stores.update_campaign(name, {"state": "waiting"})
        logger.info("iteration %d: waiting for %d external answers", iteration, len(outstanding))
        return {"waiting": len(outstanding), "iteration": iteration}

    ids, raw, _ = stores.read_block(name, "features")
    if config.features.kind == "chgnet_embedding":
        raw = _design_block(stores, name, "embedding", ids)
    X = learning.design_features(config.features.kind, raw)
    row = {cid: i for i, cid in enumerate(ids)}
    dear = [lab for lab in labels if lab["fidelity"] == config.oracle.fidelity]
    cheap_name = config.oracle.cheap.fidelity if config.oracle.cheap else None
    good = [lab for lab in dear if lab["status"] == "success"]
    good_cheap = [
        lab for lab in labels if lab["fidelity"] == cheap_name and lab["status"] == "success"
    ]
    data = learning.TrainingData(
        X,
        np.array([row[lab["candidate_id"]] for lab in good], dtype=int),
        np.array([lab["energy_per_atom"] for lab in good]),
        np.array([row[lab["candidate_id"]] for lab in good_cheap], dtype=int),
        np.array([lab["energy_per_atom"] for lab in good_cheap]),
    )
    n_calls = len(dear)
    cost = float(sum(lab.get("cost") or 0.0 for lab in labels))
    rng = np.random.default_rng([config.seed, iteration])

    metrics: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    fitted, diversity, domain_summary = None, None, None
    if good:
        fitted, metrics = learning.fit_and_validate(config, data, rng)
        domain = learning.assess_domain(config, X, data.dear_index)
        flagged = np.flatnonzero(domain["flagged"])
        domain_summary = {"n_flagged": int(flagged.size), "limits": domain["limits"]}
        # Flags are kept as one block in the model document, not written to every
        # flagged candidate: early on most of the pool is flagged, and per-document
        # updates cost O(pool) each on the embedded store.
        stores.add_model(
            {
                "campaign": name,
                "iteration": iteration,
                "featurizer": {"kind": config.features.kind, "cutoffs": config.features.cutoffs},
                "training_ids": [lab["candidate_id"] for lab in good],
                "cheap_training_ids": [lab["candidate_id"] for lab in good_cheap],
                "fidelity_offsets": list(fitted.offsets) if fitted.multi_fidelity else None,
                "cv_predictions": None
                if fitted.cv is None
                else {"mean": fitted.cv.mean.tolist(), "std": fitted.cv.std.tolist()},
                **fitted.model.to_dict(),
                "metrics": metrics,
                "domain": {
                    **domain_summary,
                    "flagged_ids": [ids[i] for i in flagged],
                    "mahalanobis": domain["mahalanobis"][flagged].tolist(),
                    "leverage": domain["leverage"][flagged].tolist(),
                },
                "time": now(),
            }
        )
        diversity = learning.diversity(config, X, data.dear_index)

    # Free: neither answered (successfully or not) nor asked, at each fidelity.
    taken = {(lab["candidate_id"], lab["fidelity"] == cheap_name) for lab in labels} | {
        (a["candidate_id"], a["cheap"]) for a in open_
    }
    dear_ok = np.ones(len(ids), dtype=bool)
    cheap_ok = np.full(len(ids), config.oracle.cheap is not None)
    for cid, cheap in taken:
        if cid in row:
            (cheap_ok if cheap else dear_ok)[row[cid]] = False
    hull = _hull_estimate(config, stores, name, ids, fitted, X, good, dear_ok, rng)
    if hull is not None:
        members, estimate, _ = hull
        metrics["missing_ground_states"] = estimate.expected_missing
        _store_hull(stores, name, iteration, ids, members, estimate)

    rmse_history = [
        h["metrics"].get("rmse") for h in doc.get("history", []) if h["iteration"] < iteration
    ] + [metrics["rmse"]]
    decision = judge(
        stopping_thresholds(config),
        n_calls,
        metrics,
        cost_spent=cost,
        n_failed=n_calls - len(good),
        rmse_history=rmse_history,
    )
    if config.stopping.missing_ground_states is not None:
        judge_missing_ground_states(
            decision,
            metrics.get("missing_ground_states"),
            config.stopping.missing_ground_states,
            n_calls,
            config.stopping.min_labels,
        )

    requests: list[learning.Request] = []
    rule_name = None
    if not decision.stop:
        # Outstanding external questions count against the batch and the budget.
        k = min(
            config.acquisition.batch_size - len(outstanding),
            config.stopping.max_oracle_calls - n_calls - len(outstanding),
        )
        if not (dear_ok.any() or cheap_ok.any()):
            decision.stop, decision.reason = True, "candidate pool exhausted"
        else:
            comps, hull_labels, reuse = None, None, None
            if config.acquisition.rule in ("lower_confidence_bound", "ground_state"):
                amounts = _design_block(stores, name, "composition", ids)
                comps = amounts / amounts.sum(axis=1, keepdims=True)
            if hull is not None:
                reuse, hull_labels = (hull[0], hull[1]), hull[2]
            rule_name, requests = learning.select(
                config, fitted, X, dear_ok, cheap_ok, k, rng, comps, hull_labels, reuse
            )

    entry = {
        "iteration": iteration,
        "n_labels": len(good),
        "n_cheap_labels": len(good_cheap),
        "n_oracle_calls": n_calls,
        "n_answers": len(labels),
        "n_outstanding": len(outstanding),
        "cost_spent": cost,
        "metrics": metrics,
        "decision": decision.to_dict(),
        "rule": rule_name,
        "acquired": [ids[r.index] for r in requests if not r.cheap],
        "acquired_cheap": [ids[r.index] for r in requests if r.cheap],
        "diversity": diversity,
        "domain": domain_summary,
        "seconds": round(time.perf_counter() - t0, 3),
        "time": now(),
    }
    fields = {
        "iteration": iteration,
        "n_oracle_calls": n_calls,
        "cost_spent": cost,
        "metrics": metrics,
        "criteria": entry["decision"]["criteria"],
        "history": [*history_before, entry],
    }
    if decision.stop:
        fields.update(state="failed" if decision.failed else "stopped", stop_reason=decision.reason)
    elif not requests:
        fields["state"] = "waiting"
    # One update: the decision and its questions are recorded together or not at all.
    entries = [
        acquisition_entry(
            ids[r.index],
            cheap_name if r.cheap else config.oracle.fidelity,
            iteration + 1,
            rule_name,
            r.score,
            cheap=r.cheap,
            external=config.oracle.external and not r.cheap,
        )
        for r in requests
    ]
    stores.record_acquisitions(name, entries, extra=fields)
    rmse = metrics["rmse"]
    logger.info(
        "iteration %d: %d labels, cv rmse %s eV/atom -> %s",
        iteration,
        len(good),
        "n/a" if rmse is None else f"{rmse:.4f}",
        f"stop ({decision.reason})" if decision.stop else f"acquire {len(requests)} ({rule_name})",
    )
    if decision.stop:
        return {"stopped": True, "reason": decision.reason, "iteration": iteration}
    if not requests:
        return {"waiting": len(outstanding), "iteration": iteration}
    return Response(addition=_launch_job(name, iteration + 1))
