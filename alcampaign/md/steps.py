"""The on-the-fly MD campaign's steps on plain objects: no store, no workflow.

:func:`run_md_segment` is the pure middle of the ``md_segment`` job
(``alcampaign.campaign.otf_md`` reads the campaign document and the latest potential,
calls it, and writes the frame, the MD state and the history entry it returns), as
:func:`alcampaign.science.learning.decide` is for the controller. The helpers around
it build the simulated cell, an unfitted potential, frame ids and the MD state that a
segment starts from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from alcampaign.md.config import MDCampaignConfig
from alcampaign.md.dynamics import (
    SegmentResult,
    TimestepPolicy,
    TriggerLimits,
    run_segment,
    temperature_at,
)
from alcampaign.md.potential import (
    EnvironmentDescriptor,
    EnvironmentDomain,
    LinearPotential,
    SoapDescriptor,
    UncertainPotentialCalculator,
)
from alcampaign.science.features import RadialPairFeaturizer


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


def start_state(config: MDCampaignConfig, structure: Structure) -> dict:
    """The state of the first segment: Maxwell-Boltzmann velocities at the first target
    temperature (seeded by the campaign), no net momentum."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = initial_atoms(config, structure)
    MaxwellBoltzmannDistribution(
        atoms,
        temperature_K=temperature_at(0, [list(p) for p in config.md.temperature]),
        rng=np.random.default_rng([config.seed, 1]),
    )
    Stationary(atoms)
    return atoms_to_state(atoms, 0, 0.0, config.md.timestep.initial, labelled=False)


@dataclass
class SegmentOutcome:
    """What one MD segment did, for the job to write.

    Attributes
    ----------
    result
        Where the integrator stopped and what it saw (trajectory included).
    flags
        Uncertainty and extrapolation measures at the last step, the limits, and the
        limits crossed.
    frame_id
        The frame to ask the oracle about (``None`` unless a limit was crossed).
    target_temperature
        Thermostat target at the last step (K).
    state
        The MD state the next segment starts from.
    budget_left
        Whether the oracle budget allowed a question (else the triggers were off).
    stop_reason
        Why the campaign ends here (``None`` when a frame was asked).
    """

    result: SegmentResult
    flags: dict
    frame_id: str | None
    target_temperature: float
    state: dict
    budget_left: bool
    stop_reason: str | None


def run_md_segment(
    config: MDCampaignConfig, potential: LinearPotential, state: dict, n_oracle_calls: int
) -> SegmentOutcome:
    """Run MD from ``state`` on ``potential`` until a limit is crossed or the run ends.

    The triggers (force uncertainty, the per-atom domain's Mahalanobis and leverage
    limits) are armed only while the oracle budget lasts; without budget the run goes
    on to ``md.n_steps`` on the potential as it is.

    Parameters
    ----------
    config
        The MD campaign config.
    potential
        The latest potential with its domain fitted (``set_domain``).
    state
        The MD state to start from (:func:`start_state` or the stored one).
    n_oracle_calls
        Oracle calls so far.
    """
    md, ts = config.md, config.md.timestep
    schedule = [list(p) for p in md.temperature]
    budget_left = n_oracle_calls < config.stopping.max_oracle_calls
    limits = None
    if budget_left:
        limits = TriggerLimits(
            config.triggers.force_std,
            potential.domain.mahalanobis_limit_,
            potential.domain.leverage_limit_,
        )
    result = run_segment(
        state_to_atoms(state),
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
    r = result.results
    flags = {
        "reasons": result.reasons,
        "max_force_std": float(r["max_force_std"]),
        "energy_std": float(r["energy_std"]),
        "max_mahalanobis": r.get("max_mahalanobis"),
        "max_leverage": r.get("max_leverage"),
        "limits": {"force_std": config.triggers.force_std, **potential.domain.limits()},
    }
    reason = None
    if not result.triggered:
        reason = f"MD reached step {md.n_steps}"
        if not budget_left:
            reason += f" (oracle budget of {config.stopping.max_oracle_calls} calls spent)"
    return SegmentOutcome(
        result=result,
        flags=flags,
        frame_id=frame_id(result.atoms, result.step) if result.triggered else None,
        target_temperature=temperature_at(result.step, schedule),
        state=atoms_to_state(
            result.atoms, result.step, result.time_fs, result.dt_fs, labelled=result.triggered
        ),
        budget_left=budget_left,
        stop_reason=reason,
    )
