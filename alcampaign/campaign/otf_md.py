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
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import numpy as np
from ase import Atoms
from jobflow import Flow, Response, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from alcampaign.campaign.jobs import INGEST_JOB, STORE_JOB, _stores, import_maker
from alcampaign.md.config import MDCampaignConfig
from alcampaign.md.dynamics import TimestepPolicy, TriggerLimits, run_segment, temperature_at
from alcampaign.md.potential import (
    EnvironmentDescriptor,
    EnvironmentDomain,
    Frame,
    LinearPotential,
    SoapDescriptor,
    UncertainPotentialCalculator,
)
from alcampaign.science.features import RadialPairFeaturizer
from alcampaign.store.facade import CampaignStores, answered_state, label_document, now

logger = logging.getLogger("alcampaign")

KIND = "otf_md"
FRAME = "md_frame"


# -- helpers (no store access) -------------------------------------------------------


def initial_atoms(config: MDCampaignConfig, structure: Structure) -> Atoms:
    """The simulated cell: the structure repeated by ``system.supercell``."""
    atoms = AseAtomsAdaptor.get_atoms(structure)
    return atoms.repeat(tuple(config.system.supercell))


def new_potential(config: MDCampaignConfig, species: list[str]) -> LinearPotential:
    """An unfitted potential with the config's descriptors."""
    p = config.potential
    pair = RadialPairFeaturizer(species, p.pair.r_cut, p.pair.n_radial, p.pair.r_min)
    soap = None
    if p.soap.enabled:
        soap = SoapDescriptor(species, p.soap.r_cut, p.soap.n_max, p.soap.l_max, p.soap.sigma)
    return LinearPotential(EnvironmentDescriptor(pair, soap))


def environment_domain(config: MDCampaignConfig) -> EnvironmentDomain:
    """The per-atom domain the config asks for (unfitted)."""
    t = config.triggers
    return EnvironmentDomain(t.mahalanobis_factor, t.leverage_factor, t.ridge)


def frame_id(atoms: Atoms, step: int, prefix: str = "md") -> str:
    """A stable id: the step and a hash of the positions (rounded to 1e-6 A)."""
    digest = hashlib.sha1(np.round(atoms.positions, 6).tobytes()).hexdigest()[:10]
    return f"{prefix}-{step:07d}-{digest}"


def atoms_to_state(atoms: Atoms, step: int, time_fs: float, dt_fs: float, labelled: bool) -> dict:
    """The MD state a segment starts from, as plain lists."""
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "velocities": atoms.get_velocities().tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
        "step": int(step),
        "time_fs": float(time_fs),
        "dt_fs": float(dt_fs),
        "from_labelled": bool(labelled),
    }


def state_to_atoms(state: dict) -> Atoms:
    """The atoms (with velocities) of an MD state."""
    atoms = Atoms(
        numbers=state["numbers"], positions=state["positions"], cell=state["cell"], pbc=state["pbc"]
    )
    atoms.set_velocities(np.asarray(state["velocities"], dtype=float))
    return atoms


def _frame_doc(name: str, atoms: Atoms, fid: str, **fields: Any) -> dict:
    return {
        "campaign": name,
        "candidate_id": fid,
        "kind": FRAME,
        "structure": AseAtomsAdaptor.get_structure(atoms).as_dict(),
        "formula": atoms.get_chemical_formula(),
        "n_sites": len(atoms),
        "state": "acquired",
        "time": now(),
        **fields,
    }


def _campaign(stores: CampaignStores, name: str) -> tuple[dict, MDCampaignConfig]:
    doc = stores.get_campaign(name)
    if doc is None:
        raise ValueError(f"no campaign named {name!r} in this store")
    if doc.get("kind") != KIND:
        raise ValueError(f"campaign {name!r} is not an on-the-fly MD campaign")
    return doc, MDCampaignConfig.model_validate(doc["config"])


def _frames(stores: CampaignStores, name: str, properties: list[str], criteria: dict | None = None):
    return stores.candidate_table(name, properties, {"kind": FRAME, **(criteria or {})})


# -- jobs ------------------------------------------------------------------------------


@job(config=STORE_JOB)
def register_md(config: dict, structure: dict) -> dict:
    """Create the campaign document (config, structure, no MD state yet) unless it exists."""
    stores = _stores()
    name = config["name"]
    if stores.get_campaign(name) is None:
        stores.create_campaign(name, config, kind=KIND, structure=structure, md_state=None)
    return {"name": name}


@job(config=STORE_JOB)
def bootstrap_frames(name: str, after: Any = None) -> dict:
    """Record the bootstrap frames (randomly displaced copies of the cell), once."""
    stores = _stores()
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
        oracle = maker.make(Structure.from_dict(f["structure"]))
        oracle.name = f"{config.oracle.fidelity} {f['candidate_id']}"
        oracle.update_metadata(
            {
                "campaign": name,
                "candidate_id": f["candidate_id"],
                "fidelity": config.oracle.fidelity,
            }
        )
        jobs.append(oracle)
        answers.append(
            {
                "candidate_id": f["candidate_id"],
                "job_uuid": oracle.uuid,
                "energy": oracle.output.output.energy,
                "forces": oracle.output.output.forces,
                "structure": oracle.output.structure,
            }
        )
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
    stores = _stores()
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
    labels, moved = [], {"labelled": [], "failed": []}
    for a in answers:
        structure = a.get("structure")
        if isinstance(structure, dict):
            structure = Structure.from_dict(structure)
        energy, forces = a.get("energy"), a.get("forces")
        ok = energy is not None and forces is not None and structure is not None
        label = label_document(
            name,
            a["candidate_id"],
            config.oracle.fidelity,
            oracle={"maker": config.oracle.maker, "kwargs": config.oracle.kwargs},
            cost=config.oracle.cost,
            iteration=None,
            job_uuid=a.get("job_uuid"),
            energy_per_atom=float(energy) / len(structure) if ok else None,
            structure=structure,
            forces=np.asarray(forces, dtype=float).tolist() if ok else None,
            error="the oracle job produced no energy or forces (it failed)",
        )
        info = steps.get(a["candidate_id"], {})
        label.update(kind=FRAME, step=info.get("step"), source=info.get("source"))
        labels.append(label)
        moved[answered_state(label["status"])].append(a["candidate_id"])
    n_new = stores.add_labels(labels)
    for state, ids in moved.items():
        stores.set_state(name, ids, state)
    n_calls, _ = stores.update_counts(name, config.oracle.fidelity)
    logger.info("%s: %d frames labelled; %d oracle calls so far", name, len(labels), n_calls)
    return {"n_new": n_new, "n_failed": len(moved["failed"]), "n_oracle_calls": n_calls}


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
    stores = _stores()
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
        Frame(
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
    stores.add_model(
        {
            "campaign": name,
            "iteration": iteration,
            "kind": "linear_potential",
            "featurizer": potential.descriptor.to_dict(),
            "training_ids": ids,
            "n_train": len(ids),
            "alpha": float(m.alpha_),
            "beta": float(m.betas_[0]),
            "beta_force": float(m.betas_[1]),
            "log_evidence": float(m.log_evidence()),
            "potential": potential.get_state(),
            "seconds": round(time.perf_counter() - t0, 3),
            "time": now(),
        }
    )
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


@job(config=STORE_JOB)
def md_segment(name: str, after: Any = None) -> Response | dict:
    """Run MD on the latest potential until it is unsure or the run is over.

    First answers any frame asked but not labelled and brings the potential up to date
    with every label (both happen after an interruption). When a limit is crossed the
    frame is recorded (state ``acquired``) before the oracle job is added, with the MD
    state to continue from.
    """
    stores = _stores()
    doc, config = _campaign(stores, name)
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

    t0 = time.perf_counter()
    md, ts = config.md, config.md.timestep
    schedule = [list(p) for p in md.temperature]
    state = doc.get("md_state")
    if state is None:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        atoms = initial_atoms(config, Structure.from_dict(doc["structure"]))
        MaxwellBoltzmannDistribution(
            atoms,
            temperature_K=temperature_at(0, schedule),
            rng=np.random.default_rng([config.seed, 1]),
        )
        Stationary(atoms)
        state = atoms_to_state(atoms, 0, 0.0, ts.initial, labelled=False)
    atoms = state_to_atoms(state)
    n_calls = int(doc.get("n_oracle_calls") or 0)
    budget_left = n_calls < config.stopping.max_oracle_calls
    limits = None
    if budget_left:
        limits = TriggerLimits(
            config.triggers.force_std,
            potential.domain.mahalanobis_limit_,
            potential.domain.leverage_limit_,
        )
    result = run_segment(
        atoms,
        UncertainPotentialCalculator(potential),
        start_step=state["step"],
        end_step=md.n_steps,
        dt_fs=state["dt_fs"],
        schedule=schedule,
        policy=TimestepPolicy(ts.min, ts.max, ts.high, ts.low, ts.shrink, ts.grow),
        limits=limits,
        integrator=md.integrator,
        friction=md.friction,
        seed=config.seed,
        time_fs=state["time_fs"],
        check_first=not state["from_labelled"],
    )
    history = doc.get("history") or []
    segment = len(history)
    r = result.results
    flags = {
        "reasons": result.reasons,
        "max_force_std": float(r["max_force_std"]),
        "energy_std": float(r["energy_std"]),
        "max_mahalanobis": r.get("max_mahalanobis"),
        "max_leverage": r.get("max_leverage"),
        "limits": {
            "force_std": config.triggers.force_std,
            **potential.domain.limits(),
        },
    }
    fid = frame_id(result.atoms, result.step) if result.triggered else None
    entry = {
        "iteration": segment,
        "start_step": state["step"],
        "end_step": result.step,
        "triggered": result.triggered,
        "frame_id": fid,
        "flags": flags,
        "model_iteration": model["iteration"],
        "n_oracle_calls": n_calls,
        "budget_left": budget_left,
        "trajectory": result.history,
        "seconds": round(time.perf_counter() - t0, 3),
        "time": now(),
        "metrics": {},
    }
    new_state = atoms_to_state(
        result.atoms, result.step, result.time_fs, result.dt_fs, labelled=result.triggered
    )
    if result.triggered:
        target = temperature_at(result.step, schedule)
        frame = _frame_doc(
            name,
            result.atoms,
            fid,
            source="md",
            step=result.step,
            time_fs=result.time_fs,
            target_temperature=target,
            flags=flags,
            acquisition={"rule": "+".join(result.reasons), "segment": segment, "time": now()},
        )
        # The frame is recorded before the MD state moves past it, and both before any
        # oracle job exists: an interruption anywhere loses nothing and asks nothing twice.
        stores.insert_candidates(name, [frame])
        stores.update_campaign(
            name, {"md_state": new_state, "iteration": segment, "history": [*history, entry]}
        )
        logger.info(
            "%s: step %d (%.0f K, dt %.2f fs): %s -> oracle",
            name,
            result.step,
            target,
            result.dt_fs,
            ", ".join(result.reasons),
        )
        return Response(addition=label_flow(name, config, [frame]))
    reason = f"MD reached step {md.n_steps}"
    if not budget_left:
        reason += f" (oracle budget of {config.stopping.max_oracle_calls} calls spent)"
    stores.update_campaign(
        name,
        {
            "md_state": new_state,
            "iteration": segment,
            "history": [*history, entry],
            "state": "stopped",
            "stop_reason": reason,
            "md_summary": summarize(stores, name, [*history, entry]),
        },
    )
    logger.info("%s: %s", name, reason)
    return {"stopped": True, "reason": reason, "step": result.step}


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
