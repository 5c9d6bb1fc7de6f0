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

from alcampaign.acquisition import make_rule
from alcampaign.config import CampaignConfig, ConfigError
from alcampaign.enumeration import candidate_id, enumerate_orderings, make_parent
from alcampaign.features import ClusterVectorFeaturizer
from alcampaign.stopping import METRIC_NAMES, cross_validate, judge, validation_metrics
from alcampaign.stores import CampaignStores, now
from alcampaign.surrogate import Prediction, make_surrogate

logger = logging.getLogger("alcampaign")

STORE_JOB = JobConfig(expose_store=True)
# The ingest job must run even when an oracle job failed: its missing outputs
# resolve to None and the label is recorded as failed.
INGEST_JOB = JobConfig(expose_store=True, on_missing_references=OnMissing.NONE)


def _stores() -> CampaignStores:
    store = CURRENT_JOB.store
    if store is None:
        raise RuntimeError("campaign jobs must run with expose_store=True")
    return CampaignStores.from_job_store(store)


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


def featurizer_for(config: CampaignConfig, parent) -> ClusterVectorFeaturizer:
    """The featurizer the config asks for, on the campaign's parent lattice."""
    return ClusterVectorFeaturizer(parent.atoms, parent.chemical_symbols, config.features.cutoffs)


@job(config=STORE_JOB)
def register_campaign(config: dict, parent: dict) -> dict:
    """Create the campaign document (config and parent structure) unless it exists."""
    stores = _stores()
    name = config["name"]
    if stores.get_campaign(name) is None:
        stores.create_campaign(name, config, parent=parent)
    return {"name": name}


@job(config=STORE_JOB)
def enumerate_candidates(name: str, after: Any = None) -> dict:
    """Enumerate the orderings of the parent and store them as candidates with features."""
    stores = _stores()
    doc, config = _campaign(stores, name)
    t0 = time.perf_counter()
    parent = make_parent(
        Structure.from_dict(doc["parent"]), config.system.sublattices, config.system.structure.name
    )
    orderings = enumerate_orderings(
        parent,
        config.enumeration.min_size,
        config.enumeration.max_size,
        config.enumeration.max_candidates,
    )
    features = featurizer_for(config, parent).featurize([o.atoms for o in orderings])
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
                    "backend": "icet",
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
    stores.record_acquisitions(name, chosen, 0, "initial_random", [0.0] * n)
    logger.info("initial design: %d random candidates", n)
    return Response(addition=label_flow(name, config, stores, chosen, 0))


def label_flow(
    name: str, config: CampaignConfig, stores: CampaignStores, ids: list[str], next_iteration: int
) -> Flow:
    """Oracle jobs for candidates, the job that ingests their answers, the next controller.

    The answers are passed by reference to the task documents' fields every atomate2
    relaxation or static task document has (``output.energy``, ``structure``,
    ``output.forces``, ``output.stress``), so any atomate2 Maker can be the oracle.
    """
    maker = import_maker(config.oracle.maker, config.oracle.kwargs)
    docs = {
        d["candidate_id"]: d
        for d in stores.candidate_table(name, ["structure"], {"candidate_id": {"$in": list(ids)}})
    }
    jobs, answers = [], []
    for cid in ids:
        oracle = maker.make(Structure.from_dict(docs[cid]["structure"]))
        oracle.name = f"oracle {cid}"
        oracle.update_metadata({"campaign": name, "candidate_id": cid})
        jobs.append(oracle)
        answers.append(
            {
                "candidate_id": cid,
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
    """Store the oracle's answers as labels and move their candidates on.

    An answer without an energy (its oracle job failed) is stored with status
    ``failed``; its candidate leaves the pool for good, so it is never asked again.
    """
    stores = _stores()
    _, config = _campaign(stores, name)
    oracle = {"maker": config.oracle.maker, "kwargs": config.oracle.kwargs}
    acquired = {
        d["candidate_id"]: d.get("acquisition") or {}
        for d in stores.candidate_table(
            name, ["acquisition"], {"candidate_id": {"$in": [a["candidate_id"] for a in answers]}}
        )
    }
    labels, ok, failed = [], [], []
    for a in answers:
        cid = a["candidate_id"]
        structure = a.get("structure")
        if isinstance(structure, dict):
            structure = Structure.from_dict(structure)
        energy = a.get("energy")
        label = {
            "campaign": name,
            "candidate_id": cid,
            "fidelity": config.oracle.fidelity,
            "oracle": oracle,
            "job_uuid": a.get("job_uuid"),
            "cost": config.oracle.cost,
            "iteration": acquired.get(cid, {}).get("iteration"),
            "time": now(),
        }
        if energy is None or structure is None:
            label.update(
                status="failed",
                error="the oracle job produced no energy (it failed)",
                energy_per_atom=None,
            )
            failed.append(cid)
        else:
            label.update(
                status="success",
                energy=float(energy),
                energy_per_atom=float(energy) / len(structure),
                forces=a.get("forces"),
                stress=a.get("stress"),
                final_structure=structure.as_dict(),
            )
            ok.append(cid)
        labels.append(label)
    n_new = stores.add_labels(labels)
    stores.set_state(name, ok, "labelled")
    stores.set_state(name, failed, "failed")
    n_calls = len(stores.get_labels(name, config.oracle.fidelity, ["candidate_id"]))
    stores.update_campaign(name, {"n_oracle_calls": n_calls})
    logger.info(
        "ingested %d labels (%d failed); %d oracle calls so far", len(ok), len(failed), n_calls
    )
    return {"n_new": n_new, "n_failed": len(failed), "n_oracle_calls": n_calls}


def fit_and_validate(
    config: CampaignConfig, X: np.ndarray, y: np.ndarray, rng: np.random.Generator
):
    """Fit the configured surrogate on all labels and cross-validate it.

    Returns the fitted model and the metrics (``None`` where not measurable yet).
    """
    kwargs = {"alpha": config.surrogate.alpha, "beta": config.surrogate.beta}
    model = make_surrogate(config.surrogate.kind, **kwargs).fit(X, y)
    metrics: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    if len(y) >= 3:
        cv = cross_validate(
            lambda: make_surrogate(config.surrogate.kind, **kwargs),
            X,
            y,
            config.stopping.cv_folds,
            rng,
        )
        metrics = validation_metrics(y, cv)
    return model, metrics


@job(config=STORE_JOB)
def controller(name: str, iteration: int, after: Any = None) -> Response | dict:
    """Read the stores, update the model, judge the stopping rules, and stop or go on.

    Records the model (``models``), the decision (the campaign ``history``), and, when
    going on, the acquisitions (candidates ``acquired``) before it adds the oracle jobs,
    the ingest job and ``controller(iteration + 1)``.
    """
    stores = _stores()
    doc, config = _campaign(stores, name)
    if doc["state"] != "running":
        return {"skipped": f"campaign is {doc['state']}"}
    t0 = time.perf_counter()
    ids, X, states = stores.feature_block(name)
    pending = [cid for cid, s in zip(ids, states, strict=True) if s == "acquired"]
    if pending:
        # Asked but never answered (a crash or a resume): answer them first.
        logger.info("iteration %d: %d acquisitions await their labels", iteration, len(pending))
        return Response(addition=label_flow(name, config, stores, pending, iteration))

    labels = stores.get_labels(
        name, config.oracle.fidelity, ["candidate_id", "status", "energy_per_atom"]
    )
    n_calls = len(labels)
    good = [lab for lab in labels if lab["status"] == "success"]
    row = {cid: i for i, cid in enumerate(ids)}
    rng = np.random.default_rng([config.seed, iteration])

    metrics: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    model = None
    if good:
        X_train = X[[row[lab["candidate_id"]] for lab in good]]
        y_train = np.array([lab["energy_per_atom"] for lab in good])
        model, metrics = fit_and_validate(config, X_train, y_train, rng)
        stores.add_model(
            {
                "campaign": name,
                "iteration": iteration,
                "kind": config.surrogate.kind,
                "featurizer": {"kind": config.features.kind, "cutoffs": config.features.cutoffs},
                "training_ids": [lab["candidate_id"] for lab in good],
                **model.to_dict(),
                "metrics": metrics,
                "time": now(),
            }
        )
    s = config.stopping
    decision = judge(
        n_calls,
        metrics,
        max_oracle_calls=s.max_oracle_calls,
        rmse_target=s.rmse_target,
        mae_target=s.mae_target,
        min_labels=s.min_labels,
        n_failed=n_calls - len(good),
        max_failure_fraction=s.max_failure_fraction,
    )

    chosen: list[str] = []
    if not decision.stop:
        pool = [i for i, st in enumerate(states) if st == "pool"]
        k = min(config.acquisition.batch_size, s.max_oracle_calls - n_calls)
        if not pool:
            decision.stop, decision.reason = True, "candidate pool exhausted"
        else:
            # Without a single successful label there is no model: ask at random.
            rule = make_rule(config.acquisition.rule if model else "random")
            prediction = (
                model.predict(X[pool])
                if model
                else Prediction(np.zeros(len(pool)), np.ones(len(pool)), np.ones(len(pool)))
            )
            selection = rule.select(prediction, k, rng)
            chosen = [ids[pool[i]] for i in selection.indices]
            stores.record_acquisitions(
                name, chosen, iteration + 1, rule.name, selection.scores.tolist()
            )

    entry = {
        "iteration": iteration,
        "n_labels": len(good),
        "n_oracle_calls": n_calls,
        "metrics": metrics,
        "decision": decision.to_dict(),
        "acquired": chosen,
        "seconds": round(time.perf_counter() - t0, 3),
        "time": now(),
    }
    history = [h for h in doc.get("history", []) if h["iteration"] != iteration] + [entry]
    fields = {
        "iteration": iteration,
        "n_oracle_calls": n_calls,
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
        f"stop ({decision.reason})" if decision.stop else f"acquire {len(chosen)}",
    )
    if decision.stop:
        return {"stopped": True, "reason": decision.reason, "iteration": iteration}
    return Response(addition=label_flow(name, config, stores, chosen, iteration + 1))
