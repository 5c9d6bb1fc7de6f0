"""Featurizers: gradients against finite differences."""

import numpy as np
import pytest
from ase.build import bulk

from alcampaign.science.features import RadialPairFeaturizer
from alcampaign.science.surrogate import BayesianLinearRegression


@pytest.fixture
def cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[1, 4]] = "Au"
    atoms.rattle(0.05, seed=1)
    return atoms


def test_feature_gradients_equal_finite_differences(cell):
    feat = RadialPairFeaturizer(["Cu", "Au"], r_cut=4.5, n_radial=5)
    grad = feat.gradients(cell)
    h = 1e-5
    for atom in (0, 3, 6):
        for axis in range(3):
            plus, minus = cell.copy(), cell.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            fd = (feat.features(plus) - feat.features(minus)) / (2 * h)
            np.testing.assert_allclose(grad[atom, axis], fd, atol=1e-7, rtol=1e-5)


def test_force_rows_give_forces_of_the_fitted_energy(cell):
    feat = RadialPairFeaturizer(["Cu", "Au"], r_cut=4.5, n_radial=5)
    rng = np.random.default_rng(0)
    w = rng.normal(size=feat.n_features)
    rows, kind = feat.design_rows(cell)
    assert rows.shape == (1 + 3 * len(cell), feat.n_features) and kind.sum() == 3 * len(cell)
    forces = rows[kind == 1] @ w
    h = 1e-5
    plus, minus = cell.copy(), cell.copy()
    plus.positions[2, 1] += h
    minus.positions[2, 1] -= h
    fd = -(feat.features(plus) @ w - feat.features(minus) @ w) / (2 * h)
    assert forces[2 * 3 + 1] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    # A model fitted to energy + force rows of a pair potential reproduces its forces.
    frames = []
    for seed in range(6):
        atoms = cell.copy()
        atoms.rattle(0.1, seed=seed)
        frames.append(feat.design_rows(atoms))
    X = np.vstack([f[0] for f in frames])
    k = np.concatenate([f[1] for f in frames])
    model = BayesianLinearRegression(center=False).fit(X, X @ w, k)
    pred = model.predict(rows[kind == 1], kind=1)
    np.testing.assert_allclose(pred.mean, forces, atol=1e-3 * np.abs(forces).max())


def test_unknown_element(cell):
    with pytest.raises(ValueError, match="Au"):
        RadialPairFeaturizer(["Cu"]).features(cell)


def test_cluster_metadata_orders_and_diameters():
    from alcampaign.science.features import ClusterVectorFeaturizer

    a = 3.8
    prim = bulk("Cu", "fcc", a=a)
    feat = ClusterVectorFeaturizer(prim, [["Cu", "Au"]], [6.0, 4.5])
    meta = feat.cluster_metadata()
    assert len(meta["order"]) == len(meta["diameter"]) == feat.n_features == 8
    assert meta["order"] == [0, 1, 2, 2, 2, 2, 3, 3]
    nn = a / np.sqrt(2)
    # fcc pair shells: a/sqrt2, a, a sqrt(3/2), a sqrt2; the nearest triangle's edge is nn
    np.testing.assert_allclose(meta["diameter"][2:6], [nn, a, a * np.sqrt(1.5), a * np.sqrt(2)])
    assert meta["diameter"][6] == pytest.approx(nn) and meta["diameter"][7] == pytest.approx(a)
    assert meta["diameter"][:2] == [0.0, 0.0]
    assert all(d <= 6.0 for d in meta["diameter"][2:6])
    assert feat.describe()["order"] == meta["order"]
