"""On-the-fly molecular dynamics: the science, free of any workflow or database.

:func:`run_segment` integrates the equations of motion (ASE Langevin or velocity
Verlet) on a potential whose ASE calculator reports its uncertainty
(:class:`~alcampaign.md.potential.UncertainPotentialCalculator`). Before every step it
reads the predicted force uncertainty and the per-atom extrapolation measures of the
current configuration; when one crosses its limit (:class:`TriggerLimits`) the
segment stops *at that configuration*, so the caller can ask the oracle about it,
update the model and continue from there. The timestep adapts inside bounds
(:class:`TimestepPolicy`): it shrinks while the force uncertainty is high and
recovers while it is low. Every step is recorded (:class:`SegmentResult.history`).

Steps are counted globally over segments, so a temperature schedule
(:func:`temperature_at`) and the random stream of the thermostat (seeded by the
campaign seed and the segment's first step) do not depend on where a run was
interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units

HISTORY_FIELDS = (
    "step",
    "time_fs",
    "dt_fs",
    "target_temperature",
    "temperature",
    "energy",
    "energy_std",
    "max_force_std",
    "max_mahalanobis",
    "max_leverage",
)


def temperature_at(step: int, schedule: Sequence[Sequence[float]]) -> float:
    """Target temperature (K) at a global step: piecewise linear through ``(step, T)``
    points, constant before the first and after the last."""
    points = np.asarray(schedule, dtype=float)
    return float(np.interp(step, points[:, 0], points[:, 1]))


@dataclass
class TimestepPolicy:
    """Adapt the timestep to the predicted force uncertainty.

    Parameters
    ----------
    dt_min, dt_max
        Bounds (fs).
    high, low
        Force uncertainty (largest epistemic std of a component, eV/A) above which the
        step shrinks and below which it recovers; in between it stays.
    shrink, grow
        Factors applied per step.
    """

    dt_min: float = 0.5
    dt_max: float = 4.0
    high: float = 0.05
    low: float = 0.02
    shrink: float = 0.5
    grow: float = 1.05

    def __post_init__(self) -> None:
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError("need 0 < dt_min <= dt_max")
        if not 0 <= self.low <= self.high:
            raise ValueError("need 0 <= low <= high")
        if not (0 < self.shrink <= 1 <= self.grow):
            raise ValueError("need 0 < shrink <= 1 <= grow")

    def next(self, dt: float, force_std: float) -> float:
        """The timestep for the next step (fs)."""
        if force_std > self.high:
            dt *= self.shrink
        elif force_std < self.low:
            dt *= self.grow
        return float(min(max(dt, self.dt_min), self.dt_max))


@dataclass
class TriggerLimits:
    """When the model is too unsure to go on without the oracle.

    ``None`` switches a criterion off. ``mahalanobis`` and ``leverage`` are per-atom
    limits (the largest atom counts).
    """

    force_std: float | None = 0.1
    mahalanobis: float | None = None
    leverage: float | None = None

    def reasons(self, results: dict) -> list[str]:
        """Which limits a calculator's results cross."""
        out = []
        if self.force_std is not None and results["max_force_std"] > self.force_std:
            out.append("force_std")
        m, h = results.get("max_mahalanobis"), results.get("max_leverage")
        if self.mahalanobis is not None and m is not None and m > self.mahalanobis:
            out.append("mahalanobis")
        if self.leverage is not None and h is not None and h > self.leverage:
            out.append("leverage")
        return out


@dataclass
class SegmentResult:
    """Where a segment ended and what it saw.

    Attributes
    ----------
    atoms
        The final configuration, with velocities (the triggering one if triggered).
    step, time_fs, dt_fs
        Global step, simulated time and timestep at the end.
    triggered
        Whether a limit stopped the segment (else it reached ``end_step``).
    reasons
        The limits crossed.
    results
        The calculator's results at the final configuration.
    history
        One list per :data:`HISTORY_FIELDS` entry, one value per evaluated step.
    """

    atoms: Atoms
    step: int
    time_fs: float
    dt_fs: float
    triggered: bool
    reasons: list[str]
    results: dict
    history: dict[str, list] = field(default_factory=dict)


def _integrator(atoms: Atoms, kind: str, dt_fs: float, target: float, friction: float, seed):
    """The ASE integrator of a segment (Langevin seeded by ``seed``, or NVE Verlet)."""
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    if kind == "langevin":
        return Langevin(
            atoms,
            dt_fs * units.fs,
            temperature_K=target,
            friction=friction / units.fs,
            fixcm=False,
            rng=np.random.default_rng(seed),
        )
    if kind == "verlet":
        return VelocityVerlet(atoms, dt_fs * units.fs)
    raise ValueError(f"unknown integrator {kind!r}; choose langevin or verlet")


def _history_row(
    atoms: Atoms, results: dict, step: int, time_fs: float, dt: float, target: float
) -> dict:
    """One step of the trajectory record (:data:`HISTORY_FIELDS`)."""
    return {
        "step": step,
        "time_fs": time_fs,
        "dt_fs": dt,
        "target_temperature": target,
        "temperature": float(atoms.get_temperature()),
        "energy": float(results["energy"]),
        "energy_std": float(results["energy_std"]),
        "max_force_std": float(results["max_force_std"]),
        "max_mahalanobis": results.get("max_mahalanobis"),
        "max_leverage": results.get("max_leverage"),
    }


def run_segment(
    atoms: Atoms,
    calculator,
    *,
    start_step: int,
    end_step: int,
    dt_fs: float,
    schedule: Sequence[Sequence[float]],
    policy: TimestepPolicy,
    limits: TriggerLimits | None,
    integrator: str = "langevin",
    friction: float = 0.02,
    seed: int = 0,
    time_fs: float = 0.0,
    check_first: bool = True,
) -> SegmentResult:
    """Integrate from ``start_step`` until a limit is crossed or ``end_step`` is reached.

    Parameters
    ----------
    atoms
        Start configuration with velocities (copied; the input is not changed).
    calculator
        An ASE calculator whose results hold ``max_force_std`` (and optionally
        ``max_mahalanobis``, ``max_leverage``).
    start_step, end_step
        Global step numbers.
    dt_fs
        Timestep at the start (fs); adapted by ``policy`` after every step.
    schedule
        ``(step, K)`` points of the target temperature (Langevin only).
    limits
        Trigger limits; ``None``: never stop early (e.g. the oracle budget is spent).
    integrator
        ``langevin`` or ``verlet`` (NVE).
    friction
        Langevin friction (1/fs).
    seed
        Campaign seed; the thermostat's random stream is seeded by ``(seed, start_step)``.
    check_first
        Check the limits at the start configuration too. ``False`` after the oracle has
        just answered for it (the updated model may still be unsure, and asking again
        would loop).
    """
    atoms = atoms.copy()
    atoms.calc = calculator
    dyn = _integrator(
        atoms, integrator, dt_fs, temperature_at(start_step, schedule), friction, [seed, start_step]
    )
    history: dict[str, list] = {k: [] for k in HISTORY_FIELDS}
    step, dt = start_step, dt_fs
    while True:
        atoms.get_forces()
        results = dict(calculator.results)
        row = _history_row(atoms, results, step, time_fs, dt, temperature_at(step, schedule))
        for k, v in row.items():
            history[k].append(v)
        reasons = limits.reasons(results) if limits and (check_first or step > start_step) else []
        if reasons or step >= end_step:
            return SegmentResult(atoms, step, time_fs, dt, bool(reasons), reasons, results, history)
        dt = policy.next(dt, results["max_force_std"])
        dyn.set_timestep(dt * units.fs)
        if integrator == "langevin":
            dyn.set_temperature(temperature_K=temperature_at(step + 1, schedule))
        dyn.run(1)
        step += 1
        time_fs += dt


def energy_drift(atoms: Atoms, calculator, n_steps: int, dt_fs: float) -> dict:
    """Velocity-Verlet (NVE) run; the drift of the total energy.

    Returns
    -------
    dict
        ``drift_mev_per_atom_per_ps`` (slope of a line fitted to the total energy),
        ``max_deviation_mev_per_atom`` (largest distance from the start), steps, dt.
    """
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, dt_fs * units.fs)
    total = [atoms.get_total_energy()]
    for _ in range(n_steps):
        dyn.run(1)
        total.append(atoms.get_total_energy())
    total = np.array(total) / len(atoms)
    t_ps = np.arange(len(total)) * dt_fs / 1000.0
    slope = np.polyfit(t_ps, total, 1)[0]
    return {
        "drift_mev_per_atom_per_ps": float(slope * 1000.0),
        "max_deviation_mev_per_atom": float(np.abs(total - total[0]).max() * 1000.0),
        "n_steps": n_steps,
        "dt_fs": dt_fs,
    }
