"""One on-the-fly MD segment on plain objects (``md.steps.run_md_segment``), no store."""

from __future__ import annotations

import numpy as np
from ase.calculators.emt import EMT
from pymatgen.core import Structure

from alcampaign.md.config import MDCampaignConfig
from alcampaign.md.potential import Frame
from alcampaign.md.steps import (
    environment_domain,
    initial_atoms,
    new_potential,
    run_md_segment,
    start_state,
)

from conftest import EXAMPLES


def _setup(max_calls: int = 10, n_steps: int = 30):
    config = MDCampaignConfig.model_validate(
        {
            "name": "steps",
            "system": {"structure": str(EXAMPLES / "cu_fcc.cif"), "supercell": [2, 1, 1]},
            "potential": {"pair": {"r_cut": 4.5, "n_radial": 6}, "soap": {"enabled": False}},
            "md": {"n_steps": n_steps, "temperature": [[0, 300], [n_steps, 300]]},
            "stopping": {"max_oracle_calls": max_calls},
        }
    )
    structure = Structure.from_file(config.system.structure)
    base = initial_atoms(config, structure)
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(4):  # small rattles: a narrow domain, so MD soon leaves it
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, 0.01, atoms.positions.shape)
        atoms.calc = EMT()
        frames.append(Frame(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    potential = new_potential(config, ["Cu"]).fit(frames)
    envs = np.vstack([potential.descriptor.atom_features(f.atoms) for f in frames])
    potential.set_domain(envs, environment_domain(config))
    return config, potential, start_state(config, structure)


def test_a_segment_leaves_the_domain_and_asks_for_the_frame():
    config, potential, state = _setup()
    out = run_md_segment(config, potential, state, n_oracle_calls=0)
    assert out.result.triggered and out.budget_left and out.stop_reason is None
    assert out.frame_id.startswith(f"md-{out.result.step:07d}-")
    assert out.state["step"] == out.result.step and out.state["from_labelled"] is True
    assert out.flags["reasons"] == out.result.reasons and out.flags["limits"]["force_std"]


def test_without_budget_the_segment_runs_to_the_end():
    config, potential, state = _setup(max_calls=3)
    out = run_md_segment(config, potential, state, n_oracle_calls=3)
    assert not out.result.triggered and not out.budget_left and out.frame_id is None
    assert out.result.step == config.md.n_steps
    assert out.stop_reason == "MD reached step 30 (oracle budget of 3 calls spent)"
    assert len(out.result.history["step"]) == config.md.n_steps + 1


def test_the_start_state_is_seeded():
    config, _, state = _setup()
    again = start_state(config, Structure.from_file(config.system.structure))
    assert state == again and state["step"] == 0 and state["from_labelled"] is False
