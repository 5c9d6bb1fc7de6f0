"""On-the-fly MD science: timestep control, schedules, segment stops."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from alcampaign.md.dynamics import (
    TimestepPolicy,
    TriggerLimits,
    energy_drift,
    run_segment,
    temperature_at,
)


class ForceScaledUncertainty(EMT):
    """EMT whose reported force uncertainty is a fixed fraction of its largest force:
    high far from equilibrium, low near it (a stand-in with a known uncertainty)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, ["energy", "forces"], system_changes)
        f = np.abs(self.results["forces"])
        self.results.update(
            energy_std=0.0, forces_std=0.05 * f, max_force_std=float(0.05 * f.max())
        )


def test_temperature_schedule():
    sched = [[0, 300], [100, 300], [200, 1500]]
    assert temperature_at(0, sched) == 300
    assert temperature_at(150, sched) == pytest.approx(900)
    assert temperature_at(500, sched) == 1500


def test_timestep_policy_bounds():
    p = TimestepPolicy(dt_min=0.5, dt_max=4.0, high=0.1, low=0.02, shrink=0.5, grow=1.5)
    assert p.next(4.0, 0.2) == 2.0
    assert p.next(0.6, 0.2) == 0.5
    assert p.next(2.0, 0.05) == 2.0
    assert p.next(3.0, 0.01) == 4.0
    with pytest.raises(ValueError):
        TimestepPolicy(dt_min=2.0, dt_max=1.0)


class HeatScaledUncertainty(EMT):
    """EMT whose reported force uncertainty grows with the kinetic temperature (as a
    potential trained on cool frames is unsure of hot ones): 1e-4 eV/A per K."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, ["energy", "forces"], system_changes)
        std = 1e-4 * self.atoms.get_temperature()
        self.results.update(
            energy_std=0.0,
            forces_std=np.full((len(self.atoms), 3), std),
            max_force_std=float(std),
        )


def test_timestep_shrinks_when_unsure_and_recovers():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.set_velocities(np.zeros((len(atoms), 3)))
    policy = TimestepPolicy(dt_min=0.25, dt_max=2.0, high=0.1, low=0.05, shrink=0.5, grow=1.2)
    # Heat to 3000 K (uncertainty ~0.3 eV/A), hold, then cool back to 100 K.
    schedule = [[0, 100], [40, 3000], [140, 3000], [180, 100]]
    r = run_segment(
        atoms,
        HeatScaledUncertainty(),
        start_step=0,
        end_step=400,
        dt_fs=2.0,
        schedule=schedule,
        policy=policy,
        limits=None,
        friction=0.05,
        seed=4,
    )
    dt = np.array(r.history["dt_fs"])
    std = np.array(r.history["max_force_std"])
    assert not r.triggered and r.step == 400
    assert std.max() > policy.high and std[-1] < policy.low
    low = int(np.argmin(dt))
    assert dt[low] == policy.dt_min  # shrank to the bound while unsure
    assert std[low - 1] > policy.high
    assert dt[-1] == policy.dt_max  # and recovered afterwards
    assert np.all((dt >= policy.dt_min) & (dt <= policy.dt_max))
    # Each step follows the policy from the uncertainty before it.
    for k in range(1, len(dt)):
        assert dt[k] == pytest.approx(policy.next(dt[k - 1], std[k - 1]))
    # Simulated time is the sum of the steps taken.
    assert r.time_fs == pytest.approx(dt[:-1].sum())


def test_segment_stops_at_the_first_unsure_configuration():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.01, seed=1)
    atoms.set_velocities(np.zeros((len(atoms), 3)))
    calc = ForceScaledUncertainty()
    kwargs = dict(start_step=10, end_step=400, dt_fs=2.0, policy=TimestepPolicy(), seed=3)
    r = run_segment(
        atoms, calc, schedule=[[0, 50], [400, 3000]], limits=TriggerLimits(0.01), **kwargs
    )
    assert r.triggered and r.reasons == ["force_std"]
    assert r.results["max_force_std"] > 0.01
    assert all(s <= 0.01 for s in r.history["max_force_std"][:-1])
    assert r.step == 10 + len(r.history["step"]) - 1
    # Deterministic: the thermostat's stream is seeded by (seed, start step).
    again = run_segment(
        atoms, calc, schedule=[[0, 50], [400, 3000]], limits=TriggerLimits(0.01), **kwargs
    )
    assert again.step == r.step
    np.testing.assert_allclose(again.atoms.positions, r.atoms.positions)


def test_energy_drift_of_emt_is_small():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=2)
    atoms.set_velocities(np.zeros((len(atoms), 3)))
    out = energy_drift(atoms, EMT(), n_steps=100, dt_fs=1.0)
    assert abs(out["max_deviation_mev_per_atom"]) < 1.0
