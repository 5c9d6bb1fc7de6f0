"""jobflow jobs of a campaign.

Every job reaches the campaign collections through the JobStore that runs it
(``JobConfig(expose_store=True)`` and ``CURRENT_JOB.store``), so a remote worker uses
its own store configuration and no connection string enters a job document. Jobs take
the campaign *name*; the config lives in the campaign document.

The loop (see DESIGN.md)::

    register -> enumerate -> prescreen -> initial_design -> [oracles -> ingest] -> controller(0)
    controller(k): fit, judge -> stop | record acquisitions -> [oracles -> ingest]
                   -> controller(k+1)

Each job is idempotent, so :func:`alcampaign.flows.resume_flow` can rerun the pipeline
after a crash: candidates are inserted only once, only unscreened candidates are
screened, acquisitions recorded but never labelled are labelled before any new
question is asked, and a label is never stored twice.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

import numpy as np
from jobflow import CURRENT_JOB, Flow, JobConfig, Maker, OnMissing, Response, job
from pymatgen.core import Structure

from alcampaign import learning
from alcampaign.config import CampaignConfig, ConfigError, stopping_thresholds
from alcampaign.enumeration import candidate_id, orderings_from_config
from alcampaign.features import ClusterVectorFeaturizer
from alcampaign.stopping import METRIC_NAMES, judge
from alcampaign.stores import CampaignStores, label_document, now

logger = logging.getLogger("alcampaign")

STORE_JOB = JobConfig(expose_store=True)
# The ingest job must run even when an oracle job failed: its missing outputs
# resolve to None and the label is recorded as failed.
INGEST_JOB = JobConfig(expose_store=True, on_missing_references=OnMissing.NONE)


def _stores() -> CampaignStores:
    store = CURRENT_JOB.store
    if store is None:
        raise RuntimeError("campaign jobs must run with expose_store=True")
    from alcampaign.managers import campaign_job_store  # jobflow-remote: $ALCAMPAIGN_STORE

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
        from alcampaign.prescreen import check_elements, load_chgnet

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
    from alcampaign.prescreen import chgnet_prescreen

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
    energies = np.array(
        [
            d["prescreen"]["energy_per_atom"]
            for d in stores.candidate_table(name, ["prescreen.energy_per_atom"])
            if d.get("prescreen")
        ]
    )
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
    if doc.get("history"):
        # Resuming: continue at the iteration after the last recorded decision.
        return Response(addition=Flow([controller(name, doc["history"][-1]["iteration"] + 1)]))
    states = stores.candidate_table(name, ["state"])
    if any(d["state"] != "pool" for d in states):
        return Response(addition=Flow([controller(name, 0)]))
    rng = np.random.default_rng(config.seed)
    ids = [d["candidate_id"] for d in states]
    n = min(config.initial_design.n_initial, len(ids))
    chosen = [ids[i] for i in rng.choice(len(ids), size=n, replace=False)]
    stores.record_acquisitions(
        name, chosen, 0, "initial_random", [0.0] * n, external=config.oracle.external
    )
    logger.info("initial design: %d random candidates", n)
    return ask(name, config, stores, [(c, False) for c in chosen], 0)


def ask(
    name: str,
    config: CampaignConfig,
    stores: CampaignStores,
    requests: list[tuple[str, bool]],
    next_iteration: int,
) -> Response | dict:
    """Hand recorded acquisitions to their oracles.

    Requests for a Maker become oracle jobs followed by the ingest job and the next
    controller. Requests for an external oracle were recorded as ``requested``: they
    wait for ``alcampaign export`` / ``ingest``; if nothing runs in the workflow the
    campaign goes to state ``waiting`` until ``alcampaign resume``.
    """
    in_workflow = [(cid, cheap) for cid, cheap in requests if cheap or not config.oracle.external]
    if in_workflow:
        return Response(addition=label_flow(name, config, stores, in_workflow, next_iteration))
    stores.update_campaign(name, {"state": "waiting"})
    logger.info(
        "waiting for %d external answers: 'alcampaign export %s --out DIR', then "
        "'alcampaign ingest' and 'alcampaign resume'",
        len(requests),
        name,
    )
    return {"waiting": len(requests)}


def label_flow(
    name: str,
    config: CampaignConfig,
    stores: CampaignStores,
    requests: list[tuple[str, bool]],
    next_iteration: int,
) -> Flow:
    """Oracle jobs for ``(candidate id, cheap?)`` requests, the ingest job, the next controller.

    The answers are passed by reference to the task-document fields every atomate2
    relaxation or static task document has (``output.energy``, ``structure``,
    ``output.forces``, ``output.stress``), so any atomate2 Maker can be the oracle.
    """
    makers = {}
    if not config.oracle.external:
        makers[False] = import_maker(config.oracle.maker, config.oracle.kwargs)
    if config.oracle.cheap is not None:
        makers[True] = import_maker(config.oracle.cheap.maker, config.oracle.cheap.kwargs)
    fidelity = {
        False: config.oracle.fidelity,
        True: config.oracle.cheap.fidelity if config.oracle.cheap else None,
    }
    docs = {
        d["candidate_id"]: d
        for d in stores.candidate_table(
            name, ["structure"], {"candidate_id": {"$in": [cid for cid, _ in requests]}}
        )
    }
    jobs, answers = [], []
    for cid, cheap in requests:
        oracle = makers[cheap].make(Structure.from_dict(docs[cid]["structure"]))
        oracle.name = f"{fidelity[cheap]} {cid}"
        oracle.update_metadata({"campaign": name, "candidate_id": cid, "fidelity": fidelity[cheap]})
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
    ingest = ingest_labels(name, answers)
    ingest.name = f"ingest {name}"
    # The next controller depends on the ingest job, so it runs after every label is in.
    following = controller(name, next_iteration, after=ingest.output)
    following.name = f"controller {name} {next_iteration}"
    return Flow([*jobs, ingest, following], name=f"{name} labels")


@job(config=INGEST_JOB)
def ingest_labels(name: str, answers: list[dict]) -> dict:
    """Store the oracles' answers as labels and move their candidates on.

    An answer without an energy (its oracle job failed) is stored with status
    ``failed``; its candidate leaves the pool of that fidelity for good, so it is never
    asked again.
    """
    stores = _stores()
    _, config = _campaign(stores, name)
    fidelities = {False: config.oracle}
    if config.oracle.cheap is not None:
        fidelities[True] = config.oracle.cheap
    ids = [a["candidate_id"] for a in answers]
    acquired = {
        d["candidate_id"]: d
        for d in stores.candidate_table(
            name, ["acquisition", "cheap_acquisition"], {"candidate_id": {"$in": ids}}
        )
    }
    labels = []
    moved: dict[tuple[bool, str], list[str]] = {}
    for a in answers:
        cid, cheap = a["candidate_id"], bool(a.get("cheap"))
        fid = fidelities[cheap]
        info = acquired.get(cid, {}).get("cheap_acquisition" if cheap else "acquisition") or {}
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
            iteration=info.get("iteration"),
            job_uuid=a.get("job_uuid"),
            energy_per_atom=float(energy) / len(structure) if ok else None,
            structure=structure,
            forces=a.get("forces"),
            stress=a.get("stress"),
            error="the oracle job produced no energy (it failed)",
        )
        moved.setdefault(
            (cheap, "labelled" if label["status"] == "success" else "failed"), []
        ).append(cid)
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


def _compositions(docs: list[dict]) -> np.ndarray:
    """Atomic fractions of each candidate over the campaign's elements."""
    elements = sorted({el for d in docs for el in d["composition"]})
    amounts = np.array([[d["composition"].get(el, 0.0) for el in elements] for d in docs])
    return amounts / amounts.sum(axis=1, keepdims=True)


@job(config=STORE_JOB)
def controller(name: str, iteration: int, after: Any = None) -> Response | dict:
    """Read the stores, update the model, judge the stopping rules, and stop or go on.

    Records the model with its domain-of-applicability flags (``models``), the decision
    with metrics, criteria and diversity (the campaign ``history``), and, when going on,
    the acquisitions (candidates ``acquired``, or ``requested`` from an external oracle)
    before it adds the oracle jobs, the ingest job and ``controller(iteration + 1)``.
    With external questions open and no new answer it only records ``waiting``.
    """
    stores = _stores()
    doc, config = _campaign(stores, name)
    if doc["state"] != "running":
        return {"skipped": f"campaign is {doc['state']}"}
    t0 = time.perf_counter()
    field = "prescreen.embedding" if config.features.kind == "chgnet_embedding" else "features"
    extra = ["composition"] if config.acquisition.rule == "lower_confidence_bound" else []
    ids, raw, cands = stores.feature_block(name, field, extra)
    pending = [(d["candidate_id"], False) for d in cands if d["state"] == "acquired"]
    pending += [(d["candidate_id"], True) for d in cands if d.get("cheap_state") == "acquired"]
    if pending:
        # Asked but never answered (a crash or a resume): answer them first.
        logger.info("iteration %d: %d acquisitions await their labels", iteration, len(pending))
        return Response(addition=label_flow(name, config, stores, pending, iteration))

    X = learning.design_features(config.features.kind, raw)
    row = {cid: i for i, cid in enumerate(ids)}
    labels = stores.get_labels(
        name, properties=["candidate_id", "fidelity", "status", "energy_per_atom", "cost"]
    )
    outstanding = [d["candidate_id"] for d in cands if d["state"] == "requested"]
    history_before = doc.get("history") or []
    answers_before = history_before[-1].get("n_answers", 0) if history_before else 0
    if outstanding and len(labels) == answers_before:
        # External questions unanswered and nothing new to learn from: keep waiting.
        stores.update_campaign(name, {"state": "waiting"})
        logger.info("iteration %d: waiting for %d external answers", iteration, len(outstanding))
        return {"waiting": len(outstanding), "iteration": iteration}
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

    chosen: list[tuple[str, bool]] = []
    rule_name = None
    if not decision.stop:
        dear_ok = np.array([d["state"] == "pool" for d in cands])
        cheap_ok = (
            np.array([d.get("cheap_state") in (None, "pool") for d in cands])
            if config.oracle.cheap
            else np.zeros(len(cands), dtype=bool)
        )
        # Outstanding external questions count against the batch and the budget.
        k = min(
            config.acquisition.batch_size - len(outstanding),
            config.stopping.max_oracle_calls - n_calls - len(outstanding),
        )
        if not (dear_ok.any() or cheap_ok.any()):
            decision.stop, decision.reason = True, "candidate pool exhausted"
        else:
            comps = _compositions(cands) if extra else None
            rule_name, requests = learning.select(
                config, fitted, X, dear_ok, cheap_ok, k, rng, comps
            )
            for cheap in (False, True):
                mine = [r for r in requests if r.cheap == cheap]
                if mine:
                    stores.record_acquisitions(
                        name,
                        [ids[r.index] for r in mine],
                        iteration + 1,
                        rule_name,
                        [r.score for r in mine],
                        cheap=cheap,
                        external=config.oracle.external and not cheap,
                    )
            chosen = [(ids[r.index], r.cheap) for r in requests]

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
        "acquired": [cid for cid, cheap in chosen if not cheap],
        "acquired_cheap": [cid for cid, cheap in chosen if cheap],
        "diversity": diversity,
        "domain": domain_summary,
        "seconds": round(time.perf_counter() - t0, 3),
        "time": now(),
    }
    history = [h for h in doc.get("history", []) if h["iteration"] != iteration] + [entry]
    fields = {
        "iteration": iteration,
        "n_oracle_calls": n_calls,
        "cost_spent": cost,
        "metrics": metrics,
        "criteria": entry["decision"]["criteria"],
        "history": history,
    }
    if decision.stop:
        fields.update(state="failed" if decision.failed else "stopped", stop_reason=decision.reason)
    stores.update_campaign(name, fields)
    rmse = metrics["rmse"]
    logger.info(
        "iteration %d: %d labels, cv rmse %s eV/atom -> %s",
        iteration,
        len(good),
        "n/a" if rmse is None else f"{rmse:.4f}",
        f"stop ({decision.reason})" if decision.stop else f"acquire {len(chosen)} ({rule_name})",
    )
    if decision.stop:
        return {"stopped": True, "reason": decision.reason, "iteration": iteration}
    if not chosen:
        stores.update_campaign(name, {"state": "waiting"})
        return {"waiting": len(outstanding), "iteration": iteration}
    return ask(name, config, stores, chosen, iteration + 1)
