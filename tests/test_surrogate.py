"""The Bayesian linear model against closed forms and brute force."""

import json

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from alcampaign.science.surrogate import BayesianLinearRegression, make_surrogate


def _problem(n=30, d=6, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    return X, X @ w + noise * rng.normal(size=n), rng


def test_posterior_equals_direct_formula():
    X, y, rng = _problem()
    alpha, beta = 2.5, 300.0
    model = BayesianLinearRegression(alpha=alpha, beta=beta, center=False).fit(X, y)
    S = np.linalg.inv(alpha * np.eye(X.shape[1]) + beta * X.T @ X)
    m = beta * S @ X.T @ y
    np.testing.assert_allclose(model.mean_, m, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.covariance_, S, rtol=1e-10, atol=1e-14)
    Xq = rng.normal(size=(7, X.shape[1]))
    pred = model.predict(Xq)
    np.testing.assert_allclose(pred.mean, Xq @ m, rtol=1e-10)
    np.testing.assert_allclose(pred.epistemic_var, np.einsum("ij,jk,ik->i", Xq, S, Xq), rtol=1e-10)
    np.testing.assert_allclose(pred.aleatoric_var, 1.0 / beta)


def test_log_evidence_equals_marginal_likelihood():
    X, y, _ = _problem(n=12, d=4)
    alpha, beta = 0.7, 50.0
    model = BayesianLinearRegression(alpha=alpha, beta=beta, center=False).fit(X, y)
    cov = X @ X.T / alpha + np.eye(len(y)) / beta
    direct = multivariate_normal(np.zeros(len(y)), cov).logpdf(y)
    assert model.log_evidence() == pytest.approx(direct, rel=1e-10)


def test_evidence_maximisation_beats_a_grid():
    X, y, _ = _problem(n=40, d=5, noise=0.1)
    model = BayesianLinearRegression(center=False).fit(X, y)
    best_grid = -np.inf
    for a in np.logspace(-3, 3, 25):
        for b in np.logspace(-1, 4, 25):
            best_grid = max(
                best_grid, BayesianLinearRegression(a, b, center=False).fit(X, y).log_evidence()
            )
    assert model.log_evidence() >= best_grid - 1e-6
    # The noise estimate is near the truth (sigma = 0.1).
    assert 1 / np.sqrt(model.beta_) == pytest.approx(0.1, rel=0.35)


def test_centering_adds_offset_back():
    X, y, _ = _problem()
    model = BayesianLinearRegression(alpha=1.0, beta=100.0, center=True).fit(X, y + 5.0)
    ref = BayesianLinearRegression(alpha=1.0, beta=100.0, center=False).fit(
        X, y + 5.0 - (y + 5.0).mean()
    )
    np.testing.assert_allclose(model.predict(X).mean, ref.predict(X).mean + (y + 5.0).mean())


def test_errors():
    with pytest.raises(ValueError, match="zero labels"):
        BayesianLinearRegression().fit(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(RuntimeError, match="not fitted"):
        BayesianLinearRegression().predict(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="unknown surrogate"):
        make_surrogate("gp")


def test_tiny_data_sets_fit():
    X, y, _ = _problem(n=1, d=5)
    pred = BayesianLinearRegression().fit(X, y).predict(X)
    assert np.all(np.isfinite(pred.mean)) and np.all(pred.epistemic_var >= 0)


def test_energy_and_force_rows_direct_formula_and_evidence():
    rng = np.random.default_rng(4)
    Xe, Xf = rng.normal(size=(6, 4)), rng.normal(size=(9, 4))
    ye, yf = rng.normal(size=6), rng.normal(size=9)
    X = np.vstack([Xe, Xf])
    y = np.concatenate([ye, yf])
    kind = np.array([0] * 6 + [1] * 9)
    alpha, be, bf = 0.5, 40.0, 7.0
    model = BayesianLinearRegression(alpha, be, bf, center=False).fit(X, y, kind)
    B = np.diag(np.where(kind == 0, be, bf))
    S = np.linalg.inv(alpha * np.eye(4) + X.T @ B @ X)
    np.testing.assert_allclose(model.mean_, S @ X.T @ B @ y, rtol=1e-10)
    np.testing.assert_allclose(model.predict(Xf, kind=1).aleatoric_var, 1 / bf)
    cov = X @ X.T / alpha + np.linalg.inv(B)
    direct = multivariate_normal(np.zeros(len(y)), cov).logpdf(y)
    assert model.log_evidence() == pytest.approx(direct, rel=1e-10)
    # Separate noise levels are recovered by evidence maximisation.
    w = rng.normal(size=4)
    Xe, Xf = rng.normal(size=(200, 4)), rng.normal(size=(400, 4))
    X = np.vstack([Xe, Xf])
    y = X @ w + np.concatenate([0.01 * rng.normal(size=200), 0.2 * rng.normal(size=400)])
    fitted = BayesianLinearRegression(center=False).fit(X, y, [0] * 200 + [1] * 400)
    assert 1 / np.sqrt(fitted.betas_[0]) == pytest.approx(0.01, rel=0.2)
    assert 1 / np.sqrt(fitted.betas_[1]) == pytest.approx(0.2, rel=0.2)


def test_weights_equal_repeated_rows():
    X, y, _ = _problem(n=10, d=3)
    w = np.array([0, 1, 2, 1, 3, 1, 0, 1, 1, 2])
    weighted = BayesianLinearRegression(1.0, 50.0).fit(X, y, weight=w)
    repeated = BayesianLinearRegression(1.0, 50.0).fit(np.repeat(X, w, 0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.mean_, repeated.mean_, rtol=1e-10)
    assert weighted.offset_ == pytest.approx(repeated.offset_)


@pytest.mark.parametrize("center", [False, True])
def test_incremental_update_equals_refit(center):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 12))
    y = X @ rng.normal(size=12) + 3.0 + 0.1 * rng.normal(size=40)
    kind = (rng.random(40) < 0.3).astype(int)
    first = BayesianLinearRegression(center=center).fit(X[:15], y[:15], kind[:15])
    alpha, be, bf = first.alpha_, first.betas_[0], first.betas_[1]
    first.update(X[15:30], y[15:30], kind[15:30]).update(X[30:], y[30:], kind[30:])
    refit = BayesianLinearRegression(alpha, be, bf, center=center).fit(X, y, kind)
    np.testing.assert_allclose(first.mean_, refit.mean_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(first.chol_, refit.chol_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(first.covariance_, refit.covariance_, rtol=1e-8, atol=1e-12)
    assert first.log_evidence() == pytest.approx(refit.log_evidence(), rel=1e-8)


def test_chol_update():
    from alcampaign.science.surrogate import chol_update

    rng = np.random.default_rng(0)
    M = rng.normal(size=(6, 6))
    A = M @ M.T + np.eye(6)
    x = rng.normal(size=6)
    L = np.linalg.cholesky(A)
    chol_update(L, x)
    np.testing.assert_allclose(L @ L.T, A + np.outer(x, x), rtol=1e-12)


def test_ensemble_interface_and_disagreement():
    from alcampaign.science.surrogate import BootstrapEnsemble

    X, y, rng = _problem(n=40, d=4, noise=0.05)
    ens = BootstrapEnsemble(n_members=16, seed=0).fit(X[:20], y[:20])
    near = ens.predict(X[:5])
    far = ens.predict(10 * rng.normal(size=(5, 4)))
    assert np.all(near.epistemic_var >= 0) and far.epistemic_var.mean() > near.epistemic_var.mean()
    assert np.isfinite(ens.log_evidence())
    before = ens.predict(X[20:]).epistemic_var.mean()
    ens.update(X[20:], y[20:])
    assert ens.predict(X[20:]).epistemic_var.mean() < before
    assert np.abs(ens.predict(X).mean - y).max() < 0.3
    assert ens.to_dict()["kind"] == "ensemble" and ens.covariance_.shape == (4, 4)


@pytest.mark.parametrize("kind", ["bayesian_linear", "ensemble"])
def test_from_dict_predicts_as_the_fitted_model(kind):
    """A stored surrogate (``to_dict``) read back with ``from_dict`` predicts exactly
    what the fitted one did: mean, epistemic and aleatoric variance."""
    from alcampaign.science.surrogate import make_surrogate, surrogate_from_dict

    rng = np.random.default_rng(11)
    X = rng.normal(size=(30, 6))
    y = X @ rng.normal(size=6) + 2.0 + 0.05 * rng.normal(size=30)
    model = make_surrogate(kind).fit(X, y)
    stored = json.loads(json.dumps(model.to_dict()))  # as a store round trip leaves it
    back = surrogate_from_dict(stored)
    Xq = rng.normal(size=(9, 6))
    want, got = model.predict(Xq), back.predict(Xq)
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.epistemic_var, want.epistemic_var, rtol=1e-7, atol=1e-14)
    np.testing.assert_allclose(got.aleatoric_var, want.aleatoric_var, rtol=1e-12)
    # The closed form from the stored numbers (single model / the reference model).
    ref = model if kind == "bayesian_linear" else model.reference_
    d = ref.to_dict()
    mean = Xq @ np.array(d["mean"]) + d["offset"]
    var = np.einsum("ij,jk,ik->i", Xq, np.array(d["covariance"]), Xq) + 1 / d["beta"]
    p = surrogate_from_dict(d).predict(Xq)
    np.testing.assert_allclose(p.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(p.total_var, var, rtol=1e-8)


def test_from_dict_refuses_what_it_cannot_reproduce():
    from alcampaign.science.surrogate import BayesianLinearRegression, surrogate_from_dict

    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 3))
    d = BayesianLinearRegression().fit(X, X.sum(axis=1)).to_dict()
    with pytest.raises(ValueError, match="covariance"):
        surrogate_from_dict({**d, "covariance": [[1.0]]})
    with pytest.raises(ValueError, match="member_offsets"):
        surrogate_from_dict({**d, "kind": "ensemble", "member_means": [d["mean"]]})
    with pytest.raises(ValueError, match="unknown surrogate"):
        surrogate_from_dict({**d, "kind": "gp"})
    with pytest.raises(RuntimeError, match="from_state"):
        surrogate_from_dict(d).update(X[:2], np.zeros(2))
    with pytest.raises(ValueError, match="columns"):
        surrogate_from_dict(d).predict(np.zeros((2, 4)))
