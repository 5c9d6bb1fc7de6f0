"""On-the-fly MD campaign as jobflow jobs.

::

    register -> bootstrap frames -> md_segment
    md_segment: frames asked but unanswered? -> [oracle jobs -> ingest -> update -> md_segment]
                labels the model lacks?       -> [update -> md_segment]
                else run MD until a limit is crossed or the last step:
                  crossed -> record the frame (state acquired) and the MD state, then
                             [oracle job -> ingest -> update -> md_segment]
                  end     -> campaign stopped

Every job reaches the campaign collections through the JobStore that runs it
(``JobConfig(expose_store=True)``). What lands where (see docs/otf_md.md):

* ``candidates``: one document per **frame** (``kind: md_frame``): ``candidate_id``
  (the frame id, stable: step plus a hash of the positions), ``structure``, ``step``,
  ``time_fs``, ``source`` (``bootstrap``/``md``), ``flags`` (uncertainty and extrapolation
  measures, their limits and the reasons it was asked), ``state``
  (``acquired`` -> ``labelled``/``failed``) and, once used for training, ``environments``
  (per-atom descriptors, for the domain).
* ``labels``: the oracle's answers, keyed by (campaign, frame id, fidelity), with
  ``kind: md_frame``, total ``energy`` and ``forces``; never overwritten.
* ``models``: one document per potential version (``iteration`` counts updates) with the
  potential's state (descriptor settings, column scale, hyperparameters and sufficient
  statistics) and the ids it was trained on.
* ``campaigns``: the campaign document (``kind: otf_md``) with ``md_state`` (positions,
  velocities, step, time and timestep where the next segment starts) and ``history``
  (one entry per segment, with the per-step trajectory: step, time, timestep, target and
  kinetic temperature, energy, uncertainties, extrapolation measures).

A frame is recorded before its oracle job exists and labels are keyed by frame id, so
an interrupted campaign resumed with :func:`md_resume_flow` asks each frame once and
loses no answer.

``md_segment`` is read -> step -> write, as the controller: it reads the campaign
document and the latest potential, runs the pure
:func:`alcampaign.md.steps.run_md_segment`, and writes the frame
(:class:`~alcampaign.campaign.documents.Frame`), the MD state and the history entry
(:class:`~alcampaign.campaign.documents.SegmentEntry`). Answers are stored by the same
:func:`alcampaign.campaign.ingest.ingest_answers` as a campaign's.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from ase import Atoms
from jobflow import Flow, Response, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from alcampaign.campaign.context import INGEST_JOB, STORE_JOB, job_stores, load_campaign
from alcampaign.campaign.documents import Frame, PotentialModel, SegmentEntry
from alcampaign.campaign.ingest import ingest_answers, label_for, register
from alcampaign.campaign.oracle import answer_refs, import_maker, oracle_job
from alcampaign.md.config import MDCampaignConfig
from alcampaign.md.potential import Frame as TrainingFrame
from alcampaign.md.potential import LinearPotential
from alcampaign.md.steps import (
    SegmentOutcome,
    environment_domain,
    frame_id,
    initial_atoms,
    new_potential,
    run_md_segment,
    start_state,
)
from alcampaign.store.facade import CampaignStores, now

logger = logging.getLogger("alcampaign")

KIND = "otf_md"
FRAME = "md_frame"


def _frame_doc(name: str, atoms: Atoms, fid: str, **fields: Any) -> dict:
    return Frame(
        campaign=name,
        candidate_id=fid,
        structure=AseAtomsAdaptor.get_structure(atoms).as_dict(),
        formula=atoms.get_chemical_formula(),
        n_sites=len(atoms),
        state="acquired",
        time=now(),
        **fields,
    ).to_store()


def _campaign(stores: CampaignStores, name: str) -> tuple[dict, MDCampaignConfig]:
    return load_campaign(stores, name, MDCampaignConfig, kind=KIND)


def _frames(stores: CampaignStores, name: str, properties: list[str], criteria: dict | None = None):
    return stores.candidate_table(name, properties, {"kind": FRAME, **(criteria or {})})


# -- jobs ------------------------------------------------------------------------------


@job(config=STORE_JOB)
def register_md(config: dict, structure: dict) -> dict:
    """Create the campaign document (config, structure, no MD state yet) unless it exists."""
    return register(job_stores(), config, kind=KIND, structure=structure, md_state=None)


@job(config=STORE_JOB)
def bootstrap_frames(name: str, after: Any = None) -> dict:
    """Record the bootstrap frames (randomly displaced copies of the cell), once."""
    stores = job_stores()
    doc, config = _campaign(stores, name)
    if _frames(stores, name, ["state"]):
        return {"n_new": 0}
    base = initial_atoms(config, Structure.from_dict(doc["structure"]))
    rng = np.random.default_rng([config.seed, 0])
    docs = []
    for k in range(config.bootstrap.n_frames):
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, config.bootstrap.rattle, atoms.positions.shape)
        docs.append(
            _frame_doc(
                name,
                atoms,
                frame_id(atoms, 0, prefix=f"boot{k}"),
                source="bootstrap",
                step=0,
                time_fs=0.0,
                flags=None,
                acquisition={"rule": "bootstrap", "time": now()},
            )
        )
    n = stores.insert_candidates(name, docs)
    logger.info("%s: %d bootstrap frames recorded", name, n)
    return {"n_new": n}


def label_flow(name: str, config: MDCampaignConfig, frames: list[dict]) -> Flow:
    """Oracle jobs for recorded frames, then ingest, model update and the next segment."""
    maker = import_maker(config.oracle.maker, config.oracle.kwargs)
    jobs, answers = [], []
    for f in frames:
        structure = Structure.from_dict(f["structure"])
        oracle = oracle_job(maker, structure, name, f["candidate_id"], config.oracle.fidelity)
        jobs.append(oracle)
        answers.append(answer_refs(oracle, f["candidate_id"], stress=False))
    ingest = ingest_frames(name, answers)
    ingest.name = f"ingest {name}"
    return Flow(
        [*jobs, ingest, *_update_and_continue(name, after=ingest.output)], name=f"{name} labels"
    )


def _update_and_continue(name: str, after: Any = None) -> list:
    update = update_potential(name, after=after)
    update.name = f"update potential {name}"
    segment = md_segment(name, after=update.output)
    segment.name = f"md segment {name}"
    return [update, segment]


@job(config=INGEST_JOB)
def ingest_frames(name: str, answers: list[dict]) -> dict:
    """Store the oracle's answers as ``md_frame`` labels; frames move to labelled/failed."""
    stores = job_stores()
    _, config = _campaign(stores, name)
    steps = {
        d["candidate_id"]: d
        for d in _frames(
            stores,
            name,
            ["step", "source"],
            {"candidate_id": {"$in": [a["candidate_id"] for a in answers]}},
        )
    }
    labels = []
    for a in answers:
        info = steps.get(a["candidate_id"], {})
        label = label_for(
            name,
            a,
            config.oracle,
            None,
            require_forces=True,
            kind=FRAME,
            step=info.get("step"),
            source=info.get("source"),
        )
        labels.append((label, False))
    return ingest_answers(stores, name, labels, config.oracle.fidelity)


def _good_labels(stores: CampaignStores, name: str, fidelity: str) -> list[dict]:
    return [
        lab
        for lab in stores.get_labels(
            name, fidelity, ["kind", "status", "energy", "forces", "final_structure"]
        )
        if lab.get("kind") == FRAME and lab["status"] == "success"
    ]


@job(config=STORE_JOB)
def update_potential(name: str, after: Any = None) -> dict:
    """Add every successful label the latest potential lacks (rank-one updates, then the
    evidence re-maximised) and store the new version; a no-op when none is missing."""
    stores = job_stores()
    doc, config = _campaign(stores, name)
    model = stores.latest_model(name)
    trained = set(model["training_ids"]) if model else set()
    labels = [
        lab
        for lab in _good_labels(stores, name, config.oracle.fidelity)
        if lab["candidate_id"] not in trained
    ]
    if not labels:
        return {"iteration": model["iteration"] if model else None, "n_new": 0}
    t0 = time.perf_counter()
    frames = [
        TrainingFrame(
            AseAtomsAdaptor.get_atoms(Structure.from_dict(lab["final_structure"])),
            lab["energy"],
            np.asarray(lab["forces"], dtype=float),
        )
        for lab in labels
    ]
    if model is None:
        species = sorted({el.symbol for el in Structure.from_dict(doc["structure"]).composition})
        potential = new_potential(config, species).fit(frames)
    else:
        potential = LinearPotential.from_state(model["potential"]).update(frames)
    envs = {
        lab["candidate_id"]: potential.descriptor.atom_features(f.atoms).tolist()
        for lab, f in zip(labels, frames, strict=True)
    }
    stores.update_candidates(name, {cid: {"environments": e} for cid, e in envs.items()})
    iteration = 0 if model is None else model["iteration"] + 1
    ids = sorted(trained | set(envs))
    m = potential.model
    version = PotentialModel(
        campaign=name,
        iteration=iteration,
        featurizer=potential.descriptor.to_dict(),
        training_ids=ids,
        n_train=len(ids),
        alpha=float(m.alpha_),
        beta=float(m.betas_[0]),
        beta_force=float(m.betas_[1]),
        log_evidence=float(m.log_evidence()),
        potential=potential.get_state(),
        seconds=round(time.perf_counter() - t0, 3),
        time=now(),
    )
    stores.add_model(version.to_store())
    logger.info(
        "%s: potential v%d on %d frames (force noise %.3g eV/A)",
        name,
        iteration,
        len(ids),
        m.betas_[1] ** -0.5,
    )
    return {"iteration": iteration, "n_new": len(labels)}


def load_potential(stores: CampaignStores, name: str, config: MDCampaignConfig):
    """The latest potential with its per-atom domain fitted on its training frames."""
    model = stores.latest_model(name)
    if model is None:
        return None, None
    potential = LinearPotential.from_state(model["potential"])
    docs = _frames(stores, name, ["environments"], {"candidate_id": {"$in": model["training_ids"]}})
    envs = np.vstack([np.asarray(d["environments"], dtype=float) for d in docs])
    potential.set_domain(envs, environment_domain(config))
    return potential, model


def _catch_up(stores: CampaignStores, name: str, config: MDCampaignConfig, doc: dict):
    """What must happen before MD can run, as the job's outcome; else the potential
    and its model document.

    Frames asked but not labelled are labelled first, and a potential that lacks a
    successful label is updated first (both happen after an interruption).
    """
    if doc["state"] != "running":
        return {"skipped": f"campaign is {doc['state']}"}
    pending = _frames(stores, name, ["structure"], {"state": "acquired"})
    if pending:
        logger.info("%s: %d frames await their labels", name, len(pending))
        return Response(addition=label_flow(name, config, pending))
    potential, model = load_potential(stores, name, config)
    good = {lab["candidate_id"] for lab in _good_labels(stores, name, config.oracle.fidelity)}
    if potential is None or not good <= set(model["training_ids"]):
        if not good:
            stores.update_campaign(
                name, {"state": "failed", "stop_reason": "no frame could be labelled"}
            )
            return {"stopped": True, "reason": "no frame could be labelled"}
        return Response(addition=Flow(_update_and_continue(name), name=f"{name} update"))
    return potential, model


def _segment_entry(
    out: SegmentOutcome, start_step: int, segment: int, model: dict, n_calls: int, t0: float
) -> SegmentEntry:
    return SegmentEntry(
        iteration=segment,
        start_step=start_step,
        end_step=out.result.step,
        triggered=out.result.triggered,
        frame_id=out.frame_id,
        flags=out.flags,
        model_iteration=model["iteration"],
        n_oracle_calls=n_calls,
        budget_left=out.budget_left,
        trajectory=out.result.history,
        seconds=round(time.perf_counter() - t0, 3),
        time=now(),
        metrics={},
    )


@job(config=STORE_JOB)
def md_segment(name: str, after: Any = None) -> Response | dict:
    """Run MD on the latest potential until it is unsure or the run is over.

    Read (the campaign document, the latest potential) -> the pure
    :func:`~alcampaign.md.steps.run_md_segment` -> write. First answers any frame asked
    but not labelled and brings the potential up to date with every label (both happen
    after an interruption). When a limit is crossed the frame is recorded (state
    ``acquired``) before the oracle job is added, with the MD state to continue from.
    """
    stores = job_stores()
    doc, config = _campaign(stores, name)
    ready = _catch_up(stores, name, config, doc)
    if not isinstance(ready, tuple):
        return ready
    potential, model = ready
    t0 = time.perf_counter()
    state = doc.get("md_state") or start_state(config, Structure.from_dict(doc["structure"]))
    n_calls = int(doc.get("n_oracle_calls") or 0)
    out = run_md_segment(config, potential, state, n_calls)
    history = doc.get("history") or []
    entry = _segment_entry(out, state["step"], len(history), model, n_calls, t0).to_store()
    fields = {"md_state": out.state, "iteration": len(history), "history": [*history, entry]}
    result = out.result
    if result.triggered:
        frame = _frame_doc(
            name,
            result.atoms,
            out.frame_id,
            source="md",
            step=result.step,
            time_fs=result.time_fs,
            target_temperature=out.target_temperature,
            flags=out.flags,
            acquisition={"rule": "+".join(result.reasons), "segment": len(history), "time": now()},
        )
        # The frame is recorded before the MD state moves past it, and both before any
        # oracle job exists: an interruption anywhere loses nothing and asks nothing twice.
        stores.insert_candidates(name, [frame])
        stores.update_campaign(name, fields)
        logger.info(
            "%s: step %d (%.0f K, dt %.2f fs): %s -> oracle",
            name,
            result.step,
            out.target_temperature,
            result.dt_fs,
            ", ".join(result.reasons),
        )
        return Response(addition=label_flow(name, config, [frame]))
    fields.update(
        state="stopped",
        stop_reason=out.stop_reason,
        md_summary=summarize(stores, name, fields["history"]),
    )
    stores.update_campaign(name, fields)
    logger.info("%s: %s", name, out.stop_reason)
    return {"stopped": True, "reason": out.stop_reason, "step": result.step}


def summarize(stores: CampaignStores, name: str, history: list[dict]) -> dict:
    """Oracle calls against MD steps, timestep statistics and why frames were asked."""
    frames = _frames(stores, name, ["source", "step", "flags", "state"])
    asked = [f for f in frames if f.get("source") == "md"]
    dts = np.concatenate([h["trajectory"]["dt_fs"] for h in history]) if history else np.zeros(1)
    reasons: dict[str, int] = {}
    for f in asked:
        for r in (f.get("flags") or {}).get("reasons", []):
            reasons[r] = reasons.get(r, 0) + 1
    last = history[-1]["end_step"] if history else 0
    return {
        "md_steps": int(last),
        "n_bootstrap": sum(f.get("source") == "bootstrap" for f in frames),
        "n_md_calls": len(asked),
        "call_steps": sorted(int(f["step"]) for f in asked),
        "reasons": reasons,
        "dt_fs": {"min": float(dts.min()), "mean": float(dts.mean()), "max": float(dts.max())},
        "n_failed": sum(f.get("state") == "failed" for f in frames),
    }


# -- flows -----------------------------------------------------------------------------


def md_flow(config: MDCampaignConfig, structure: Structure) -> Flow:
    """The flow of a new on-the-fly MD campaign (the structure goes into the document,
    so a worker elsewhere needs no file)."""
    register = register_md(config.model_dump(mode="json"), structure.as_dict())
    register.name = f"register {config.name}"
    return Flow([register, *md_resume_jobs(config.name, after=register.output)], name=config.name)


def md_resume_jobs(name: str, after: Any = None) -> list:
    """Bootstrap (idempotent) and the next segment, which catches up on anything open."""
    boot = bootstrap_frames(name, after=after)
    boot.name = f"bootstrap {name}"
    segment = md_segment(name, after=boot.output)
    segment.name = f"md segment {name}"
    return [boot, segment]


def md_resume_flow(name: str) -> Flow:
    """Continue a stored on-the-fly MD campaign from wherever it stopped."""
    return Flow(md_resume_jobs(name), name=f"{name} (resumed)")
