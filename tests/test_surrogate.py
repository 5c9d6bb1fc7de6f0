"""The Bayesian linear model against closed forms and brute force."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from alcampaign.surrogate import BayesianLinearRegression, make_surrogate


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
