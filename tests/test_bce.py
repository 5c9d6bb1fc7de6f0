"""Bayesian cluster expansion: evidence, priors, bases, delta term, ensemble covariance."""

import numpy as np
import pytest
from scipy.integrate import dblquad
from scipy.optimize import minimize
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm

from alcampaign.science import bce
from alcampaign.science.acquisition import greedy_d_optimal
from alcampaign.science.bce import BayesianClusterExpansion
from alcampaign.science.priors import (
    ColumnInfo,
    nested_bases,
    prior_design,
    prior_precisions,
)
from alcampaign.science.surrogate import (
    LOG_BETA_BOUNDS,
    BayesianLinearRegression,
    BootstrapEnsemble,
)

# A toy fcc-like basis: zerolet, singlet, 6 pairs, 4 triplets.
ORDER = [0, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3]
DIAMETER = [0, 0, 2.5, 3.5, 4.3, 5.0, 5.6, 6.1, 2.5, 3.5, 3.5, 4.3]


def toy(n=40, seed=0, noise=0.002, n_pool=300):
    rng = np.random.default_rng(seed)
    d = len(ORDER)
    X = np.column_stack([np.ones(n_pool), rng.uniform(-1, 1, (n_pool, d - 1))])
    # true interactions decay with order and diameter, as the hierarchical prior assumes
    scale = np.where(np.array(ORDER) >= 2, np.exp(-(np.array(DIAMETER) - 2.5)), 1.0)
    w = 0.03 * scale * rng.normal(size=d)
    y = X @ w + noise * rng.normal(size=n_pool)
    return X, y, rng


def test_evidence_equals_numerical_integration_on_two_parameters():
    """p(y | alpha, beta) = integral of N(y | X w, 1/beta) N(w | 0, diag(1/alpha)) dw."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 2))
    y = X @ np.array([0.7, -0.4]) + 0.3 * rng.normal(size=6)
    info = ColumnInfo.clusters([2, 2], [2.5, 4.0])
    model = BayesianClusterExpansion(columns=info, select_basis=False, center=False).fit(X, y)
    alpha, beta = model.alphas_, model.beta_
    assert alpha[0] != pytest.approx(alpha[1])  # the two columns have their own precision

    def integrand(w2, w1):
        r = y - X @ np.array([w1, w2])
        like = (beta / (2 * np.pi)) ** 3 * np.exp(-0.5 * beta * r @ r)
        prior = (
            np.sqrt(alpha.prod())
            / (2 * np.pi)
            * np.exp(-0.5 * (alpha[0] * w1**2 + alpha[1] * w2**2))
        )
        return like * prior

    m, sd = model.mean_, np.sqrt(np.diag(model.covariance_))
    val, _ = dblquad(
        integrand,
        m[0] - 10 * sd[0],
        m[0] + 10 * sd[0],
        m[1] - 10 * sd[1],
        m[1] + 10 * sd[1],
        epsabs=0,
        epsrel=1e-10,
    )
    assert model.log_evidence() == pytest.approx(np.log(val), abs=1e-6)


def test_evidence_gradient_equals_finite_differences():
    X, y, _ = toy()
    info = ColumnInfo.clusters(ORDER, DIAMETER)
    model = BayesianClusterExpansion(columns=info, select_basis=False).fit(X[:30], y[:30])
    S = np.arange(len(ORDER))
    T, _ = prior_design(info, "hierarchical")
    p = np.r_[np.linspace(4, 8, T.shape[1]), np.log(1e4), np.log(1e4)]
    nan = np.full(len(S), np.nan)
    _, grad, _ = model._evidence(S, T, p[: T.shape[1]], p[T.shape[1] :], nan)
    for i in range(T.shape[1] + 1):  # theta and log beta (no force rows)
        h = np.zeros_like(p)
        h[i] = 1e-5
        up = model._evidence(S, T, (p + h)[: T.shape[1]], (p + h)[T.shape[1] :], nan)[0]
        dn = model._evidence(S, T, (p - h)[: T.shape[1]], (p - h)[T.shape[1] :], nan)[0]
        assert grad[i] == pytest.approx((up - dn) / 2e-5, rel=1e-4, abs=1e-6)


def test_prior_precisions_as_documented():
    info = ColumnInfo.clusters(ORDER, DIAMETER, n_cheap=1)
    theta = {
        "order_0": 1.0,
        "order_1": 2.0,
        "order_2": 3.0,
        "order_3": 5.0,
        "diameter_slope_2": 0.5,
        "diameter_slope_3": 2.0,
        "cheap": 0.0,
    }
    alpha = prior_precisions(info, "hierarchical", theta)
    d_nn = 2.5
    expected = []
    for o, d in zip(ORDER, DIAMETER, strict=True):
        level = theta[f"order_{o}"]
        if o >= 2:
            level += theta[f"diameter_slope_{o}"] * (d / d_nn - 1)
        expected.append(np.exp(level))
    np.testing.assert_allclose(alpha, [*expected, 1.0])
    # the nearest pair and triplet get their order's level; longer clusters more precision
    assert alpha[2] == pytest.approx(np.exp(3.0)) and alpha[8] == pytest.approx(np.exp(5.0))
    assert np.all(np.diff(alpha[2:8]) > 0)
    iso = prior_precisions(info, "isotropic", {"all": 2.0, "cheap": 0.0})
    np.testing.assert_allclose(iso, [*[np.exp(2.0)] * len(ORDER), 1.0])
    with pytest.raises(ValueError, match="missing"):
        prior_precisions(info, "hierarchical", {"order_0": 1.0})
    with pytest.raises(ValueError, match="unknown prior"):
        prior_design(info, "ard")


def test_nested_bases_are_nested_and_end_with_the_offer():
    info = ColumnInfo.clusters(ORDER, DIAMETER, n_cheap=1)
    bases = nested_bases(info)
    assert bases[-1].all()
    for mask in bases:
        assert mask[:2].all() and mask[-1]  # zerolet, singlet and the cheap column: always
        for o in (2, 3):  # each order keeps its shortest clusters first
            cols = np.flatnonzero(info.order == o)
            kept = mask[cols]
            assert not np.any(kept[1:] & ~kept[:-1])
    sizes = [m.sum() for m in bases]
    assert sizes == sorted(sizes) and len({m.tobytes() for m in bases}) == len(bases)


def test_evidence_chooses_the_basis_and_records_every_alternative():
    X, y, _ = toy(seed=1)
    info = ColumnInfo.clusters(ORDER, DIAMETER)
    model = BayesianClusterExpansion(columns=info).fit(X[:25], y[:25])
    doc = model.to_dict()
    best = max(c["log_evidence"] for c in doc["evidence_choices"])
    assert doc["log_evidence"] == pytest.approx(best, abs=1e-6)
    assert len(doc["evidence_choices"]) == len(nested_bases(info))
    assert doc["basis"]["n_columns"] == len(doc["basis"]["columns"]) == len(doc["alphas"])
    # the average's weights are the evidences, renormalised over the alternatives kept
    weights = np.array([c["weight"] for c in doc["evidence_choices"]])
    log_e = np.array([c["log_evidence"] for c in doc["evidence_choices"]])
    kept = weights > 0
    assert weights.sum() == pytest.approx(1.0)
    expected = np.exp(log_e[kept] - log_e[kept].max())
    np.testing.assert_allclose(weights[kept], expected / expected.sum(), rtol=1e-9)
    assert np.all(np.exp(log_e[~kept] - logsumexp(log_e)) < bce.MIN_WEIGHT)
    # weights outside every basis of the average are exactly zero, with zero variance
    used = sorted({j for c in doc["model_average"] for j in c["columns"]})
    out = np.setdiff1d(np.arange(len(ORDER)), used)
    assert np.all(np.asarray(doc["mean"])[out] == 0)
    assert np.all(np.asarray(doc["covariance"])[out] == 0)


def test_prior_auto_picks_the_higher_evidence():
    X, y, _ = toy(seed=2)
    info = ColumnInfo.clusters(ORDER, DIAMETER)
    fits = {
        p: BayesianClusterExpansion(columns=info, prior=p, select_basis=False).fit(X[:30], y[:30])
        for p in ("hierarchical", "isotropic", "auto")
    }
    best = max(fits["hierarchical"].log_evidence(), fits["isotropic"].log_evidence())
    assert fits["auto"].log_evidence() == pytest.approx(best, abs=1e-4)


def test_isotropic_fixed_basis_equals_the_classic_model():
    X, y, _ = toy(seed=4)
    classic = BayesianLinearRegression().fit(X[:30], y[:30])
    new = BayesianClusterExpansion(prior="isotropic", select_basis=False, hyperprior=False)
    new.fit(X[:30], y[:30])
    assert new.log_evidence() == pytest.approx(classic.log_evidence(), abs=1e-3)
    np.testing.assert_allclose(new.predict(X).mean, classic.predict(X).mean, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_delta_term_is_switched_off_when_the_cheap_energy_is_noise(seed):
    X, y, rng = toy(seed=seed)
    noise = 0.02 * rng.normal(size=len(y))  # same scale as the energies, no information
    info = ColumnInfo.clusters(ORDER, DIAMETER, n_cheap=1)
    Xc = np.column_stack([X, noise - noise.mean()])
    model = BayesianClusterExpansion(columns=info).fit(Xc[:40], y[:40])
    doc = model.to_dict()
    assert not doc["cheap_energy"]["used"] and doc["cheap_energy"]["probability"] < 0.25
    # what is left of it in the average moves predictions by far less than the noise
    assert abs(model.mean_[-1]) * noise.std() < 0.2 * np.sqrt(model.noise_variance())
    assert any(c["cheap_energy"] for c in doc["evidence_choices"])  # it was tried
    best = BayesianClusterExpansion(columns=info, average=False).fit(Xc[:40], y[:40])
    assert best.mean_[-1] == 0.0


def test_delta_term_is_kept_when_the_cheap_energy_informs():
    X, y, rng = toy(seed=0)
    d = len(ORDER)
    extra = rng.uniform(-1, 1, (len(y), 3)) @ rng.normal(size=3) * 0.02  # beyond the basis
    target = y + extra
    cheap = target + 0.001 * rng.normal(size=len(y))  # a cheap fidelity that knows it
    info = ColumnInfo.clusters(ORDER, DIAMETER, n_cheap=1)
    Xc = np.column_stack([X, cheap - cheap.mean()])
    with_cheap = BayesianClusterExpansion(columns=info).fit(Xc[:40], target[:40])
    doc = with_cheap.to_dict()
    assert doc["cheap_energy"]["used"] and doc["cheap_energy"]["weight"][0] == pytest.approx(
        1, abs=0.2
    )
    without = BayesianClusterExpansion(columns=ColumnInfo.clusters(ORDER, DIAMETER)).fit(
        X[:40], target[:40]
    )
    rmse = lambda m, A: np.sqrt(np.mean((m.predict(A).mean - target) ** 2))  # noqa: E731
    assert rmse(with_cheap, Xc) < 0.5 * rmse(without, X)
    assert d + 1 == Xc.shape[1]


def test_update_equals_a_refit_at_fixed_hyperparameters():
    X, y, _ = toy(seed=5)
    info = ColumnInfo.clusters(ORDER, DIAMETER)
    model = BayesianClusterExpansion(columns=info).fit(X[:20], y[:20])
    twin = model.frozen().fit(X[:30], y[:30])
    model.update(X[20:30], y[20:30])
    np.testing.assert_allclose(model.mean_, twin.mean_, atol=1e-10)
    np.testing.assert_allclose(model.covariance_, twin.covariance_, atol=1e-10)


def test_ensemble_d_optimal_batch_equals_the_bayesian_one():
    """Same features, labels and hyperparameters: the information of a batch is a
    property of the posterior, so the committee must pick what the Bayesian model picks.
    The committee's own weight spread has rank <= 7 and would not."""
    X, y, _ = toy(seed=6)
    info = ColumnInfo.clusters(ORDER, DIAMETER)

    def base():
        return BayesianClusterExpansion(columns=info, select_basis=False)

    bayes = base().fit(X[:15], y[:15])
    ens = BootstrapEnsemble(n_members=8, seed=0, base=base).fit(X[:15], y[:15])
    noise = bayes.noise_variance()
    picks_b, gains_b = greedy_d_optimal(X[15:], bayes.covariance_, noise, 6)
    picks_e, gains_e = greedy_d_optimal(X[15:], ens.covariance_, ens.noise_variance(), 6)
    np.testing.assert_array_equal(picks_e, picks_b)
    np.testing.assert_allclose(gains_e, gains_b)
    assert np.linalg.matrix_rank(ens.covariance_) == len(ORDER)
    assert np.linalg.matrix_rank(ens.committee_covariance_) <= 7
    assert ens.to_dict()["reference_kind"] == "bayesian_cluster_expansion"
    # members share the reference's basis and prior
    assert all(np.array_equal(m.alphas_, ens.reference_.alphas_) for m in ens.members_)


def test_errors():
    with pytest.raises(ValueError, match="unknown prior"):
        BayesianClusterExpansion(prior="ard")
    with pytest.raises(ValueError, match="cheap"):
        BayesianClusterExpansion(cheap="maybe")
    with pytest.raises(ValueError, match="columns describe"):
        BayesianClusterExpansion(columns=ColumnInfo.generic(3)).fit(np.ones((4, 2)), np.ones(4))
    with pytest.raises(ValueError, match="one entry per column"):
        ColumnInfo([0, 1], [0.0], [False, False])


def test_validation_copy_keeps_the_choice_and_refits_its_hyperparameters():
    X, y, rng = toy(seed=7)
    cheap = y + 0.001 * rng.normal(size=len(y))
    info = ColumnInfo.clusters(ORDER, DIAMETER, n_cheap=1)
    Xc = np.column_stack([X, cheap - cheap.mean()])
    model = BayesianClusterExpansion(columns=info).fit(Xc[:30], y[:30])
    again = model.for_validation().fit(Xc[:30], y[:30])
    # the most probable alternatives of the average, by weight, until 90 % of it (at most 4)
    ranked = sorted(model.components_, key=lambda c: -c.option.weight)
    weights = [c.option.weight for c in ranked]
    n = len(again.choices_)
    assert n <= bce.VALIDATION_MAX
    assert sum(weights[:n]) >= bce.VALIDATION_MASS or n in (bce.VALIDATION_MAX, len(ranked))
    assert n == 1 or sum(weights[: n - 1]) < bce.VALIDATION_MASS
    key = lambda o: (o.mask.tobytes(), o.prior, o.cheap)  # noqa: E731
    assert [key(o) for o in again.choices_] == [key(c.option) for c in ranked[:n]]
    np.testing.assert_array_equal(again.choice_.mask, model.choice_.mask)
    assert again.choice_.prior == model.choice_.prior
    assert again.choice_.cheap == model.choice_.cheap
    assert again.log_evidence() == pytest.approx(model.log_evidence(), abs=1e-3)


def test_stored_document_predicts_as_the_fitted_model():
    from alcampaign.science.surrogate import surrogate_from_dict

    X, y, rng = toy(seed=8)
    cheap = y + 0.001 * rng.normal(size=len(y))
    info = ColumnInfo.clusters(ORDER, DIAMETER, n_cheap=1)
    Xc = np.column_stack([X, cheap - cheap.mean()])
    model = BayesianClusterExpansion(columns=info).fit(Xc[:30], y[:30])
    back = surrogate_from_dict(model.to_dict())
    p, q = model.predict(Xc), back.predict(Xc)
    np.testing.assert_allclose(q.mean, p.mean, atol=1e-12)
    np.testing.assert_allclose(q.std, p.std, rtol=1e-6)


def _data_space_log_evidence(X, y, alphas, beta):
    """log N(y | 0, I / beta + X diag(1/alpha) X^T): the evidence written in data space."""
    C = np.eye(len(y)) / beta + (X / alphas) @ X.T
    return multivariate_normal(np.zeros(len(y)), C).logpdf(y)


def test_map_ii_maximises_evidence_times_hyperprior():
    """MAP-II: the hyperparameters maximise log p(y | alpha, beta) + log p(log alpha)
    + log p(log beta) with the documented log-normal hyperpriors; brute force in data
    space. With fewer labels than columns ML-II interpolates (noise at its bound)."""
    rng = np.random.default_rng(11)
    X = rng.uniform(-1, 1, (3, 4))
    y = X @ np.array([0.02, -0.01, 0.005, 0.01]) + 0.002 * rng.normal(size=3)
    kw = {"prior": "isotropic", "select_basis": False, "center": False}
    model = BayesianClusterExpansion(**kw).fit(X, y)
    v = np.mean(y**2)
    level = np.log((X**2).mean(axis=0).sum() / v)

    def objective(p):
        return (
            _data_space_log_evidence(X, y, np.exp(p[0]), np.exp(p[1]))
            + norm.logpdf(p[0], level, bce.LEVEL_LOG_SD)
            + norm.logpdf(p[1], -np.log(bce.NOISE_FRACTION**2 * v), bce.NOISE_LOG_SD)
        )

    grid = [(a, b) for a in np.linspace(-5, 20, 51) for b in np.linspace(0, 18, 37)]
    start = max(grid, key=objective)
    best = minimize(
        lambda p: -objective(p),
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-12},
    )
    o = model.choice_
    np.testing.assert_allclose([o.theta[0], o.log_betas[0]], best.x, atol=2e-3)
    assert o.log_evidence + o.log_hyperprior == pytest.approx(-best.fun, abs=1e-6)
    assert model.log_evidence() == pytest.approx(
        _data_space_log_evidence(X, y, model.alphas_, model.beta_), abs=1e-8
    )
    ml = BayesianClusterExpansion(**kw, hyperprior=False).fit(X, y)
    assert ml.choice_.log_betas[0] == pytest.approx(LOG_BETA_BOUNDS[1], abs=1e-3)
    assert o.log_betas[0] < LOG_BETA_BOUNDS[1] - 3


def test_model_average_equals_the_mixture_moments():
    """Bayesian model averaging (Hoeting et al. 1999) of two bases: weights from each
    basis's evidence, predictive mean and variance those of the two-component mixture."""
    X, y, _ = toy(seed=1)
    info = ColumnInfo.clusters(ORDER, DIAMETER)
    small = np.isin(np.arange(len(ORDER)), [0, 1, 2, 3, 8])
    alts = [(small, "hierarchical", False), (np.ones(len(ORDER), bool), "hierarchical", False)]
    n = 8
    model = BayesianClusterExpansion(columns=info, alternatives=alts).fit(X[:n], y[:n])
    comps = model.components_
    assert len(comps) == 2 and min(c.option.weight for c in comps) > 0.01
    y0 = y[:n].mean()
    log_e, means, variances, noises = [], [], [], []
    for c in comps:  # each posterior and evidence in closed form at its hyperparameters
        Xs, beta = X[:n][:, c.S], c.betas[0]
        Sigma = np.linalg.inv(np.diag(c.alphas) + beta * Xs.T @ Xs)
        m = beta * Sigma @ Xs.T @ (y[:n] - y0)
        log_e.append(_data_space_log_evidence(Xs, y[:n] - y0, c.alphas, beta))
        means.append(X[:, c.S] @ m + y0)
        variances.append(np.einsum("ij,jk,ik->i", X[:, c.S], Sigma, X[:, c.S]))
        noises.append(1 / beta)
    w = np.exp(np.array(log_e) - max(log_e))
    w /= w.sum()
    np.testing.assert_allclose([c.option.weight for c in comps], w, rtol=1e-8)
    mu = w @ np.array(means)
    within, between = w @ np.array(variances), w @ (np.array(means) - mu) ** 2
    p = model.predict(X)
    np.testing.assert_allclose(p.mean, mu, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p.epistemic_var, within + between, rtol=1e-6, atol=1e-14)
    np.testing.assert_allclose(p.aleatoric_var, w @ np.array(noises), rtol=1e-9)
    assert np.all(between > 0) and between.max() > 0.01 * within.max()  # both parts count
