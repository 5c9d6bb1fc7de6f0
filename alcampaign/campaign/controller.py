"""The controller step: read the stores -> decide (pure) -> build documents -> write.

As a maggma builder keeps database operations out of ``process_item``, one controller
iteration is four stages, each a function:

1. :func:`read_step` (I/O only): the campaign document, the labels and the feature
   blocks, turned into arrays (:class:`~alcampaign.science.learning.StepInputs`);
   an iteration with nothing to decide (campaign not running, already decided,
   questions awaiting their labels, external answers awaited) ends here.
2. :func:`alcampaign.science.learning.decide` (pure, no store): fit, validate, the
   domain of applicability, diversity, the stopping judgement, the free-candidate
   masks and the acquisition; tested on small arrays in ``tests/test_learning.py``.
3. :func:`build_documents`: the model version, the history entry, the campaign fields
   and the questions, as the pydantic documents of :mod:`alcampaign.campaign.documents`.
4. :func:`write_documents`: the model, then the decision and its questions in one
   update of the campaign document (recorded together or not at all).

:func:`decide_under_lease` runs the step under the campaign lease, so two controllers
never both acquire. The step's outcome is a plain dict; the ``controller`` job in
:mod:`alcampaign.campaign.jobs` turns ``{"launch": k}`` into the next launch job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from alcampaign.campaign import lease
from alcampaign.campaign.context import load_campaign
from alcampaign.campaign.documents import (
    AcquisitionEntry,
    DecisionEntry,
    DomainRecord,
    SurrogateModel,
)
from alcampaign.config import CampaignConfig, stopping_thresholds
from alcampaign.science import learning
from alcampaign.science.validation import AUDIT_RULE as AUDIT
from alcampaign.store.facade import CampaignStores, now

logger = logging.getLogger("alcampaign")



def learning_settings(config: CampaignConfig) -> learning.LearningSettings:
    """The science settings of a campaign config."""
    return learning.LearningSettings(
        thresholds=stopping_thresholds(config),
        seed=config.seed,
        surrogate=config.surrogate.kind,
        alpha=config.surrogate.alpha,
        beta=config.surrogate.beta,
        n_members=config.surrogate.n_members,
        prior=config.surrogate.prior,
        basis=config.surrogate.basis,
        cheap_energy=config.surrogate.cheap_energy if config.prescreen.enabled else "off",
        rule=config.acquisition.rule,
        batch_size=config.acquisition.batch_size,
        kappa=config.acquisition.kappa,
        coverage_radius=config.acquisition.coverage_radius,
        mahalanobis_threshold=config.domain.mahalanobis_threshold,
        leverage_threshold=config.domain.leverage_threshold,
        domain_quantile=config.domain.quantile,
        domain_ridge=config.domain.ridge,
        cv_folds=config.stopping.cv_folds,
        accuracy_estimate=config.stopping.accuracy_estimate,
        accuracy_level=config.stopping.accuracy_level,
        calibration=config.stopping.calibration,
        calibration_weighting=config.stopping.calibration_weighting,
        dear_cost=config.oracle.cost,
        cheap_cost=config.oracle.cheap.cost if config.oracle.cheap else None,
        n_samples=config.acquisition.n_samples,
        missing_ground_states=config.stopping.missing_ground_states,
        hull_tolerance=config.stopping.hull_tolerance,
        min_labels=config.stopping.min_labels,
    )


# -- 1. read ---------------------------------------------------------------------------


@dataclass
class StepRead:
    """What the read stage found: the documents, the candidate ids and the arrays."""

    doc: dict
    config: CampaignConfig
    ids: list[str]
    good: list[dict]  # successful dear labels
    good_cheap: list[dict]
    n_answers: int
    outstanding: list[str]  # external questions still open
    inputs: learning.StepInputs
    t0: float


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


def _nothing_to_decide(doc: dict, labels: list[dict], open_: list[dict], iteration: int):
    """The outcome when this iteration has nothing to decide, else ``None``."""
    if doc["state"] != "running":
        return {"skipped": f"campaign is {doc['state']}"}
    if any(h["iteration"] >= iteration for h in doc.get("history") or []):
        return {"skipped": f"iteration {iteration} was decided already"}
    if any(not a["external"] for a in open_):
        # Asked but never answered (a crash or a resume): answer them first.
        logger.info("iteration %d: %d acquisitions await their labels", iteration, len(open_))
        return {"launch": iteration}
    history = doc.get("history") or []
    answers_before = history[-1].get("n_answers", 0) if history else 0
    if open_ and len(labels) == answers_before:
        # External questions unanswered and nothing new to learn from: keep waiting.
        logger.info("iteration %d: waiting for %d external answers", iteration, len(open_))
        return {"waiting": len(open_), "iteration": iteration}
    return None


def read_step(stores: CampaignStores, name: str, iteration: int) -> StepRead | dict:
    """Read what iteration ``iteration`` decides on, or the outcome when there is
    nothing to decide (``skipped``, ``launch`` the open questions first, ``waiting``)."""
    doc, config = load_campaign(stores, name)
    labels = stores.get_labels(
        name, properties=["candidate_id", "fidelity", "status", "energy_per_atom", "cost"]
    )
    open_ = stores.open_acquisitions(doc, labels) if doc["state"] == "running" else []
    early = _nothing_to_decide(doc, labels, open_, iteration)
    if early is not None:
        return early
    t0 = time.perf_counter()
    ids, raw, _ = stores.read_block(name, "features")
    if config.features.kind == "chgnet_embedding":
        raw = _design_block(stores, name, "embedding", ids)
    settings = learning_settings(config)
    cheap_energy = None
    if settings.uses_cheap_energy:
        got, energies, _ = stores.read_block(name, "prescreen_energy")
        if got == ids:
            cheap_energy = np.asarray(energies)[:, 0]
        elif settings.cheap_energy != "auto":  # 'on' needs it; 'auto' does without
            cheap_energy = _design_block(stores, name, "prescreen_energy", ids)[:, 0]
    X, columns = learning.design_matrix(
        settings,
        config.features.kind,
        raw,
        cheap_energy,
        (doc.get("enumeration") or {}).get("featurizer"),
    )
    row = {cid: i for i, cid in enumerate(ids)}
    cheap_name = config.oracle.cheap.fidelity if config.oracle.cheap else None
    dear = [lab for lab in labels if lab["fidelity"] == config.oracle.fidelity]
    audit_ids = {a["candidate_id"] for a in doc.get("acquisitions") or [] if a["rule"] == AUDIT}
    good = [lab for lab in dear if lab["status"] == "success"]
    audit = [lab for lab in good if lab["candidate_id"] in audit_ids]
    good = [lab for lab in good if lab["candidate_id"] not in audit_ids]  # never trained on
    good_cheap = [
        lab for lab in labels if lab["fidelity"] == cheap_name and lab["status"] == "success"
    ]
    # Taken: answered (successfully or not) or asked, at each fidelity.
    taken = np.zeros((2, len(ids)), dtype=bool)
    for cid, cheap in {(lab["candidate_id"], lab["fidelity"] == cheap_name) for lab in labels} | {
        (a["candidate_id"], a["cheap"]) for a in open_
    }:
        if cid in row:
            taken[int(cheap), row[cid]] = True
    compositions = None
    if (
        config.acquisition.rule in ("lower_confidence_bound", "ground_state")
        or config.stopping.missing_ground_states is not None
    ):
        amounts = _design_block(stores, name, "composition", ids)
        compositions = amounts / amounts.sum(axis=1, keepdims=True)
    history = doc.get("history") or []
    inputs = learning.StepInputs(
        data=learning.TrainingData(
            X,
            np.array([row[lab["candidate_id"]] for lab in good], dtype=int),
            np.array([lab["energy_per_atom"] for lab in good]),
            np.array([row[lab["candidate_id"]] for lab in good_cheap], dtype=int),
            np.array([lab["energy_per_atom"] for lab in good_cheap]),
            audit_index=np.array([row[lab["candidate_id"]] for lab in audit], dtype=int),
            audit_y=np.array([lab["energy_per_atom"] for lab in audit]),
            columns=columns,
        ),
        iteration=iteration,
        n_oracle_calls=len(dear),
        cost_spent=float(sum(lab.get("cost") or 0.0 for lab in labels)),
        rmse_history=[h["metrics"].get("rmse") for h in history if h["iteration"] < iteration],
        dear_taken=taken[0],
        cheap_taken=taken[1],
        n_outstanding=len(open_),
        compositions=compositions,
    )
    outstanding = [a["candidate_id"] for a in open_]
    return StepRead(doc, config, ids, good, good_cheap, len(labels), outstanding, inputs, t0)


# -- 3. documents ----------------------------------------------------------------------


@dataclass
class StepDocuments:
    """Everything one decision writes."""

    model: SurrogateModel | None
    entry: DecisionEntry
    campaign_fields: dict
    acquisitions: list[AcquisitionEntry]


def _model_document(name: str, read: StepRead, step: learning.Decision) -> SurrogateModel:
    config, ids, fitted, domain = read.config, read.ids, step.fitted, step.domain
    flagged = step.flagged
    # Flags are kept as one block in the model document, not written to every
    # flagged candidate: early on most of the pool is flagged, and per-document
    # updates cost O(pool) each on the embedded store.
    return SurrogateModel(
        campaign=name,
        iteration=read.inputs.iteration,
        featurizer={"kind": config.features.kind, "cutoffs": config.features.cutoffs},
        training_ids=[lab["candidate_id"] for lab in read.good],
        cheap_training_ids=[lab["candidate_id"] for lab in read.good_cheap],
        fidelity_offsets=list(fitted.offsets) if fitted.multi_fidelity else None,
        audit_ids=[ids[i] for i in read.inputs.data.audit_index],
        cv_predictions=None
        if fitted.cv is None
        else {
            "mean": fitted.cv.mean.tolist(),
            "std": fitted.calibration.apply(fitted.cv).std.tolist(),
            "std_uncalibrated": fitted.cv.std.tolist(),
        },
        **fitted.model.to_dict(),
        calibration=fitted.calibration.to_dict(),
        metrics=step.metrics,
        domain=DomainRecord(
            n_flagged=int(flagged.size),
            limits=domain["limits"],
            flagged_ids=[ids[i] for i in flagged],
            mahalanobis=domain["mahalanobis"][flagged].tolist(),
            leverage=domain["leverage"][flagged].tolist(),
        ),
        time=now(),
    )


def build_documents(name: str, read: StepRead, step: learning.Decision) -> StepDocuments:
    """The model version, the history entry, the campaign fields and the questions of
    one decision."""
    config, ids, iteration = read.config, read.ids, read.inputs.iteration
    verdict = step.verdict.to_dict()
    domain = None
    if step.domain is not None:
        domain = DomainRecord(n_flagged=int(step.flagged.size), limits=step.domain["limits"])
    entry = DecisionEntry(
        iteration=iteration,
        n_labels=len(read.good),
        n_cheap_labels=len(read.good_cheap),
        n_oracle_calls=read.inputs.n_oracle_calls,
        n_answers=read.n_answers,
        n_outstanding=len(read.outstanding),
        cost_spent=read.inputs.cost_spent,
        metrics=step.metrics,
        decision=verdict,
        rule=step.rule,
        acquired=[ids[r.index] for r in step.requests if not r.cheap],
        acquired_cheap=[ids[r.index] for r in step.requests if r.cheap],
        diversity=step.diversity,
        domain=domain,
        seconds=round(time.perf_counter() - read.t0, 3),
        time=now(),
    )
    fields = {
        "iteration": iteration,
        "n_oracle_calls": read.inputs.n_oracle_calls,
        "cost_spent": read.inputs.cost_spent,
        "metrics": step.metrics,
        "criteria": verdict["criteria"],
        "history": [*(read.doc.get("history") or []), entry.to_store()],
    }
    if step.stop:
        fields.update(
            state="failed" if step.verdict.failed else "stopped", stop_reason=step.verdict.reason
        )
    elif not step.requests:
        fields["state"] = "waiting"
    cheap_name = config.oracle.cheap.fidelity if config.oracle.cheap else None
    questions = [
        AcquisitionEntry(
            candidate_id=ids[r.index],
            fidelity=cheap_name if r.cheap else config.oracle.fidelity,
            cheap=r.cheap,
            external=config.oracle.external and not r.cheap,
            iteration=iteration + 1,
            rule=step.rule,
            score=float(r.score),
            time=now(),
        )
        for r in step.requests
    ]
    model = _model_document(name, read, step) if step.fitted is not None else None
    return StepDocuments(model, entry, fields, questions)


# -- 4. write --------------------------------------------------------------------------


def write_hulls(stores: CampaignStores, name: str, read: StepRead, step) -> None:
    """P(on hull) and the mean hull distance of every candidate, as one block.

    Columns ``p_ground_state`` and ``hull_distance`` (eV/atom), ``nan`` for candidates
    outside the hulls (failed ones); ``alcampaign query`` shows it
    (:func:`alcampaign.campaign.query.read_ground_states`).
    """
    if step.hull is None:
        return
    members, estimate = step.hull
    values = np.full((len(read.ids), 2), np.nan)
    values[members, 0] = estimate.p_on_hull
    values[members, 1] = estimate.hull_distance
    stores.delete_block(name, "ground_states")
    stores.write_block(
        name, "ground_states", read.ids, values, ["p_ground_state", "hull_distance"]
    )


def write_documents(stores: CampaignStores, name: str, docs: StepDocuments) -> None:
    """Store the model, then the decision and its questions in one update."""
    if docs.model is not None:
        stores.add_model(docs.model.to_store())
    # One update: the decision and its questions are recorded together or not at all.
    stores.record_acquisitions(
        name, [q.to_store() for q in docs.acquisitions], extra=docs.campaign_fields
    )


# -- the step --------------------------------------------------------------------------


def controller_step(stores: CampaignStores, name: str, iteration: int) -> dict:
    """One controller iteration (read -> decide -> documents -> write).

    Returns
    -------
    dict
        ``{"stopped": True, "reason", "iteration"}``, ``{"launch": k}`` (questions to
        put to the oracles, then ``controller(k)``), ``{"waiting": n, "iteration"}`` or
        ``{"skipped": why}``.
    """
    read = read_step(stores, name, iteration)
    if isinstance(read, dict):
        if "waiting" in read:
            stores.update_campaign(name, {"state": "waiting"})
        return read
    step = learning.decide(learning_settings(read.config), read.inputs)
    write_hulls(stores, name, read, step)
    write_documents(stores, name, build_documents(name, read, step))
    rmse = step.metrics["rmse"]
    logger.info(
        "iteration %d: %d labels, cv rmse %s eV/atom -> %s",
        iteration,
        len(read.good),
        "n/a" if rmse is None else f"{rmse:.4f}",
        f"stop ({step.verdict.reason})"
        if step.stop
        else f"acquire {len(step.requests)} ({step.rule})",
    )
    if step.stop:
        return {"stopped": True, "reason": step.verdict.reason, "iteration": iteration}
    if not step.requests:
        return {"waiting": len(read.outstanding), "iteration": iteration}
    return {"launch": iteration + 1}


# -- the lease -------------------------------------------------------------------------


def decide_under_lease(stores: CampaignStores, name: str, iteration: int, owner: str) -> dict:
    """The controller's work for ``owner`` (``host:pid:job``): take the campaign lease
    (or run under the one this thread holds, as ``alcampaign run``/``resume`` do), run
    :func:`controller_step` while a heartbeat renews it, give it back."""
    try:
        with lease.campaign_lease(stores, name, owner, wait=lease.LEASE_WAIT):
            # One BLAS thread: the decision's matrices are small, and OpenBLAS's threads
            # made the evidence fits 15x slower on a busy 2-core machine.
            with threadpool_limits(limits=1, user_api="blas"):
                return controller_step(stores, name, iteration)
    except lease.LeaseBusy:
        logger.warning("controller %d of %s: another controller holds the lease", iteration, name)
        return {"skipped": "another controller holds the campaign lease"}
