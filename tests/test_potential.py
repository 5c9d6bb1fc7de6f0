"""The linear potential: descriptors, forces against finite differences, uncertainty."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from alcampaign.md.potential import (
    Cluster,
    EnvironmentDescriptor,
    EnvironmentDomain,
    Frame,
    LinearPotential,
    SoapDescriptor,
    UncertainPotentialCalculator,
)
from alcampaign.science.features import RadialPairFeaturizer


def cell(seed=0, rattle=0.05):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(rattle, seed=seed)
    return atoms


def descriptor(soap=True):
    pair = RadialPairFeaturizer(["Cu"], r_cut=4.5, n_radial=5, r_min=2.0)
    return EnvironmentDescriptor(pair, SoapDescriptor(["Cu"], 4.0, 3, 2) if soap else None)


def emt_frame(atoms):
    a = atoms.copy()
    a.calc = EMT()
    return Frame(atoms.copy(), a.get_potential_energy(), a.get_forces())


@pytest.fixture(scope="module")
def potential():
    frames = [emt_frame(cell(seed=s)) for s in range(3)]
    pot = LinearPotential(descriptor()).fit(frames)
    envs = np.vstack([pot.descriptor.atom_features(f.atoms) for f in frames])
    pot.set_domain(envs, EnvironmentDomain())
    return pot


def test_cluster_pairs_equal_ase_neighbour_list():
    atoms = cell()
    atoms.positions[2] += [7.5, -0.4, 0.2]  # outside the cell: wrapped, same pairs
    i, j, d, D = Cluster.build(atoms, 5.0).pairs(5.0)
    ri, rj, rd = neighbor_list("ijd", atoms, 5.0)
    key = np.lexsort((np.round(d, 8), j, i))
    rkey = np.lexsort((np.round(rd, 8), rj, ri))
    np.testing.assert_array_equal(i[key], ri[rkey])
    np.testing.assert_array_equal(j[key], rj[rkey])
    np.testing.assert_allclose(d[key], rd[rkey], atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), d)


def test_soap_equals_dscribe_periodic_soap():
    from dscribe.descriptors import SOAP

    atoms = cell()
    mine = SoapDescriptor(["Cu"], r_cut=4.0, n_max=3, l_max=2).atom_features(atoms)
    ref = SOAP(species=["Cu"], r_cut=4.0, n_max=3, l_max=2, sigma=0.5, periodic=True)
    np.testing.assert_allclose(mine, ref.create(atoms), atol=1e-10 * np.abs(mine).max())


def test_pair_atom_features_sum_to_structure_features():
    atoms = cell()
    pair = RadialPairFeaturizer(["Cu"], r_cut=4.5, n_radial=5, r_min=2.0)
    np.testing.assert_allclose(pair.atom_features(atoms).sum(axis=0), pair.features(atoms))


@pytest.mark.parametrize("periodic", [True, False])
def test_descriptor_gradients_equal_finite_differences(periodic):
    atoms = cell(seed=3)
    if not periodic:
        atoms.pbc = False
    desc = descriptor()
    q, grad = desc.features_and_gradients(atoms)
    np.testing.assert_allclose(q, desc.atom_features(atoms))
    h = 1e-5
    for atom, axis in [(0, 0), (3, 1), (6, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        fd = (desc.atom_features(plus).sum(0) - desc.atom_features(minus).sum(0)) / (2 * h)
        np.testing.assert_allclose(grad[atom, axis], fd, atol=1e-6 * max(1, np.abs(fd).max()))


def test_forces_equal_finite_differences_of_the_energy(potential):
    atoms = cell(seed=7, rattle=0.1)
    atoms.calc = UncertainPotentialCalculator(potential)
    forces = atoms.get_forces()
    h = 1e-4
    for atom, axis in [(1, 0), (4, 2), (7, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            moved.calc = UncertainPotentialCalculator(potential)
            energies.append(moved.get_potential_energy())
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(fd, abs=1e-6)


def test_fit_reproduces_emt_and_reports_uncertainty(potential):
    held_out = emt_frame(cell(seed=11))
    atoms = held_out.atoms.copy()
    atoms.calc = UncertainPotentialCalculator(potential)
    forces = atoms.get_forces()
    rmse = np.sqrt(np.mean((forces - held_out.forces) ** 2))
    assert rmse < 0.2 * np.sqrt(np.mean(held_out.forces**2))
    r = atoms.calc.results
    assert r["forces_std"].shape == (len(atoms), 3)
    assert r["max_force_std"] == pytest.approx(r["forces_std"].max())
    assert r["mahalanobis"].shape == r["leverage"].shape == (len(atoms),)
    # A configuration far from the training frames: more uncertain and flagged.
    hot = cell(seed=12, rattle=0.3)
    hot.calc = UncertainPotentialCalculator(potential)
    hot.get_forces()
    assert hot.calc.results["max_force_std"] > 3 * r["max_force_std"]
    assert hot.calc.results["max_mahalanobis"] > potential.domain.mahalanobis_limit_


def test_state_round_trip_and_update(potential):
    copy = LinearPotential.from_state(potential.get_state())
    atoms = cell(seed=5)
    a, b = potential.evaluate(atoms), copy.evaluate(atoms)
    np.testing.assert_allclose(a.forces, b.forces, atol=1e-10)
    np.testing.assert_allclose(a.forces_std, b.forces_std, rtol=1e-8)
    # An update after the round trip equals one in memory.
    new = [emt_frame(cell(seed=21, rattle=0.15))]
    original = LinearPotential.from_state(potential.get_state()).update(new, optimize=False)
    restored = LinearPotential.from_state(copy.get_state()).update(new, optimize=False)
    np.testing.assert_allclose(
        original.evaluate(atoms).forces, restored.evaluate(atoms).forces, atol=1e-10
    )
    assert original.evaluate(new[0].atoms).max_force_std < a.max_force_std * 10


def test_unknown_element_is_refused():
    atoms = cell()
    atoms.symbols[0] = "Au"
    with pytest.raises(ValueError, match="Au"):
        descriptor().atom_features(atoms)


def test_energy_rows_are_per_atom(potential):
    """One noise level for the energy per atom: the row is the mean descriptor, the
    target E / n, and the energy prediction scales back with n."""
    small, big = cell(seed=7), cell(seed=7).repeat((2, 1, 1))
    row_s, _, q_s = potential.design(small)
    row_b, _, _ = potential.design(big)
    np.testing.assert_allclose(row_s, q_s.sum(0) / potential.scale_ / len(small))
    np.testing.assert_allclose(row_b, row_s, rtol=1e-8, atol=1e-12)  # intensive
    e_s, e_b = potential.evaluate(small), potential.evaluate(big)
    assert e_b.energy == pytest.approx(2 * e_s.energy, rel=1e-8)
    assert e_b.energy_std == pytest.approx(2 * e_s.energy_std, rel=1e-6)
    state = potential.get_state()
    del state["energy_rows"]
    with pytest.raises(ValueError, match="total-energy rows"):
        LinearPotential.from_state(state)
