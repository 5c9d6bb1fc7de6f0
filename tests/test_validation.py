"""Pool-wide accuracy estimates under active sampling, and the audit sample."""

from __future__ import annotations

import numpy as np
import pytest

from alcampaign.science.stopping import cross_validate
from alcampaign.science.surrogate import BayesianLinearRegression
from alcampaign.science.validation import (
    HeldOut,
    assess,
    audit_sample,
    density_ratio,
    epistemic_eigenvalues,
    pool_error_spread,
    posterior_estimate,
    residual_estimate,
    student_t_scale2,
)


def test_residual_estimate_is_rmse_and_mae_with_an_interval():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, 200)
    est = residual_estimate(r, 0.9, rng)
    assert est.rmse == pytest.approx(np.sqrt(np.mean(r**2)))
    assert est.mae == pytest.approx(np.mean(np.abs(r)))
    assert est.rmse_low < est.rmse < est.rmse_high
    assert est.mae_low < est.mae < est.mae_high
    w = np.r_[np.ones(100), 3 * np.ones(100)]
    wtd = residual_estimate(r, 0.9, rng, w, "iwcv")
    assert wtd.rmse == pytest.approx(np.sqrt((r[:100] @ r[:100] + 3 * r[100:] @ r[100:]) / 400))
    with pytest.raises(ValueError, match="at least one"):
        residual_estimate(np.array([]), 0.9, rng)


def test_posterior_estimate_closed_form():
    rng = np.random.default_rng(1)
    r = np.array([0.01, -0.02])
    sd = np.array([0.03, 0.04, 0.05])
    z = np.array([1.0, -1.0, 1.0, -1.0])  # mean z^2 = mean |z| = 1: no spread either
    est = posterior_estimate(r, sd, z, 0.9, rng, moments="empirical")
    assert est.rmse == pytest.approx(np.sqrt((r @ r + sd @ sd) / 5))
    assert est.mae == pytest.approx((np.abs(r).sum() + sd.sum()) / 5)
    assert est.rmse_low == pytest.approx(est.rmse) and est.rmse_high == pytest.approx(est.rmse)


def test_density_ratio_up_weights_the_under_sampled_region():
    rng = np.random.default_rng(2)
    X = np.column_stack([np.ones(600), rng.uniform(0, 1, 600)])
    low = np.flatnonzero(X[:, 1] < 0.3)
    high = np.flatnonzero(X[:, 1] >= 0.3)
    labelled = np.r_[rng.choice(low, 40, replace=False), rng.choice(high, 10, replace=False)]
    w = density_ratio(X, labelled, flatten=1.0)
    assert w.mean() == pytest.approx(1.0)
    assert w[40:].mean() > 2 * w[:40].mean()
    flat = density_ratio(X, labelled, flatten=0.0)
    assert np.allclose(flat, 1.0)
    uniform = density_ratio(X, rng.choice(600, 50, replace=False), flatten=1.0)
    assert uniform.std() < 0.5


def _shifted_pool(seed: int):
    """A linear pool whose noise grows with x, labelled mostly at small x."""
    rng = np.random.default_rng(seed)
    n = 800
    x = rng.uniform(0, 1, n)
    X = np.column_stack([np.ones(n), x, x**2])
    y = X @ np.array([0.1, -0.2, 0.3]) + rng.normal(0, 0.002 + 0.02 * x)
    lab = np.r_[
        rng.choice(np.flatnonzero(x < 0.25), 36, replace=False),
        rng.choice(np.flatnonzero(x >= 0.25), 4, replace=False),
    ]
    return X, y, lab, rng


def test_importance_weighted_cv_corrects_covariate_shift():
    ratios = {"cv": [], "iwcv": []}
    for seed in range(5):
        X, y, lab, rng = _shifted_pool(seed)

        def make():  # fixed hyperparameters: no evidence fits, a fast test
            return BayesianLinearRegression(1.0, 1e4)

        cv = cross_validate(make, X[lab], y[lab], 5, rng)
        model = make().fit(X[lab], y[lab])
        truth = np.sqrt(np.mean((model.predict(X).mean - y) ** 2))
        r = y[lab] - cv.mean
        w = density_ratio(X, lab, flatten=1.0)
        ratios["cv"].append(residual_estimate(r, 0.9, rng).rmse / truth)
        ratios["iwcv"].append(residual_estimate(r, 0.9, rng, w, "iwcv").rmse / truth)
    # Plain CV sees only the quiet region; the weights carry the noisy one over.
    assert np.median(ratios["cv"]) < 0.6
    assert abs(np.log(np.median(ratios["iwcv"]))) < abs(np.log(np.median(ratios["cv"])))


def _held_out(X, y, lab, rng):
    def make():  # the true noise precision (sigma 5 meV/atom), no evidence fits
        return BayesianLinearRegression(1.0, 4e4)

    cv = cross_validate(make, X[lab], y[lab], 5, rng)
    model = make().fit(X[lab], y[lab])
    p = model.predict(X)
    unl = np.setdiff1d(np.arange(len(y)), lab)
    held = HeldOut(y[lab], cv.mean, cv.std, p.mean[lab], p.std[unl])
    truth = np.sqrt(np.mean((p.mean - y) ** 2))
    return held, truth


def test_assess_recalibrates_and_reports_the_estimate():
    rng = np.random.default_rng(4)
    n = 500
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 3))])
    y = X @ np.array([0.0, 0.01, -0.02, 0.005]) + rng.normal(0, 0.005, n)
    lab = rng.choice(n, 60, replace=False)
    held, truth = _held_out(X, y, lab, rng)
    cal, m = assess(held, "posterior", 0.9, rng)
    assert m["accuracy"]["method"] == "posterior" and m["accuracy"]["level"] == 0.9
    assert m["rmse_low"] < m["rmse"] < m["rmse_high"]
    assert 0.75 <= m["rmse"] / truth <= 1.33  # a well-specified model: the estimate is close
    assert m["calibration_scale"] == cal.scale
    assert m["cv_rmse"] == pytest.approx(np.sqrt(np.mean((held.y - held.cv_mean) ** 2)))
    for key in (
        "ece",
        "ece_uncalibrated",
        "miscalibration_area",
        "sharpness",
        "max_std_residual",
        "max_std_residual_threshold",
    ):
        assert np.isfinite(m[key])
    with pytest.raises(ValueError, match="audit labels"):
        assess(held, "audit", 0.9, rng)
    with pytest.raises(ValueError, match="unknown accuracy estimate"):
        assess(held, "oracle", 0.9, rng)


def test_audit_sample_is_random_disjoint_and_reproducible():
    exclude = np.arange(10)
    a = audit_sample(100, 8, 3, exclude)
    assert a.size == 8 and not set(a) & set(exclude)
    assert np.array_equal(a, audit_sample(100, 8, 3, exclude))
    assert not np.array_equal(a, audit_sample(100, 8, 4, exclude))
    assert audit_sample(12, 8, 3, exclude).size == 2  # as many as are left


def test_importance_weighted_recalibration_and_posterior_describe_the_pool():
    from alcampaign.science.calibration import ece_of_z

    ece = {True: [], False: []}
    ratio = {True: [], False: []}
    for seed in range(5):
        X, y, lab, rng = _shifted_pool(seed)

        def make():  # one noise level for all x: right where labelled, too small elsewhere
            return BayesianLinearRegression(1.0, 1e4)

        cv = cross_validate(make, X[lab], y[lab], 5, rng)
        p = make().fit(X[lab], y[lab]).predict(X)
        unl = np.setdiff1d(np.arange(len(y)), lab)
        w = density_ratio(X, lab, flatten=1.0)
        held = HeldOut(y[lab], cv.mean, cv.std, p.mean[lab], p.std[unl], weights=w)
        truth = np.sqrt(np.mean((p.mean - y) ** 2))
        for weighted in (True, False):
            cal, m = assess(held, "posterior", 0.9, rng, weighted=weighted)
            ece[weighted].append(ece_of_z(cal.normalise((y[unl] - p.mean[unl]) / p.std[unl])))
            ratio[weighted].append(m["rmse"] / truth)
    assert np.median(ece[True]) < np.median(ece[False])
    assert abs(np.log(np.median(ratio[True]))) < abs(np.log(np.median(ratio[False])))
    with pytest.raises(ValueError, match="weights"):
        unweighted = HeldOut(y[lab], cv.mean, cv.std, p.mean[lab], p.std[unl])
        assess(unweighted, "cv", 0.9, rng, weighted=True)


def test_weighted_posterior_estimate_closed_form():
    rng = np.random.default_rng(5)
    r, sd = np.array([0.01]), np.array([0.02, 0.02])
    z, w = np.array([1.0, 3.0]), np.array([3.0, 1.0])  # weighted m2 = (3 + 9) / 4 = 3
    est = posterior_estimate(r, sd, z, 0.9, rng, w, "empirical")
    assert est.rmse == pytest.approx(np.sqrt((r @ r + 3.0 * sd @ sd) / 3))
    assert est.mae == pytest.approx((0.01 + 1.5 * sd.sum()) / 3)  # weighted m1 = 6 / 4


def test_student_t_scale_is_the_maximum_likelihood_scale():
    from scipy.stats import t as student

    rng = np.random.default_rng(6)
    z = 0.7 * rng.standard_t(3, 60)
    s2 = student_t_scale2(z[None, :], np.ones((1, 60)), 3.0)[0]
    _, _, scale = student.fit(z, f0=3.0, floc=0.0)
    assert np.sqrt(s2) == pytest.approx(scale, rel=1e-3)
    # integer weights are repeats
    w = rng.integers(1, 4, 60).astype(float)
    rep = np.repeat(z, w.astype(int))
    s2w = student_t_scale2(z[None, :], w[None, :], 3.0)[0]
    assert s2w == pytest.approx(student_t_scale2(rep[None, :], np.ones((1, rep.size)), 3.0)[0])


def test_student_t_moments_of_the_posterior_estimate():
    from scipy.stats import t as student

    from alcampaign.science.validation import _t_abs_mean

    assert _t_abs_mean(4.0) == pytest.approx(student.expect(abs, args=(4.0,)), rel=1e-6)
    rng = np.random.default_rng(7)
    r, sd = np.zeros(0), np.full(100, 0.01)
    # Gaussian residuals: the fitted t is nearly Gaussian; both moments agree.
    z = rng.normal(size=400)
    t_est = posterior_estimate(r, sd, z, 0.9, rng)
    emp = posterior_estimate(r, sd, z, 0.9, rng, moments="empirical")
    assert t_est.rmse == pytest.approx(emp.rmse, rel=0.05)
    assert t_est.rmse_low < t_est.rmse < t_est.rmse_high
    # Heavy tails: the t's second moment follows the true one (scale 1, dof 3: m2 = 3)
    # more closely than the sample mean of z^2 does, over repeated samples.
    err = {"student_t": [], "empirical": []}
    for _ in range(30):
        z = rng.standard_t(3, 40)
        for m in err:
            est = posterior_estimate(r, sd, z, 0.9, rng, moments=m)
            err[m].append(np.log((est.rmse / 0.01) ** 2 / 3.0))
    assert np.sqrt(np.mean(np.square(err["student_t"]))) < np.sqrt(
        np.mean(np.square(err["empirical"]))
    )
    with pytest.raises(ValueError, match="moments"):
        posterior_estimate(r, sd, z, 0.9, rng, moments="median")


def test_epistemic_eigenvalues_are_those_of_the_candidates_covariance():
    rng = np.random.default_rng(11)
    R = rng.normal(size=(40, 6))
    B = rng.normal(size=(6, 4))
    Sigma = B @ B.T  # rank 4, as a model average's covariance can be
    lam = epistemic_eigenvalues(R.T @ R, Sigma)
    direct = np.linalg.eigvalsh(R @ Sigma @ R.T)[-6:]
    assert np.allclose(np.sort(lam), direct, atol=1e-9)
    assert lam.sum() == pytest.approx(((R @ Sigma) * R).sum())


def test_pool_error_spread_moments():
    rng = np.random.default_rng(12)
    lam, noise, n = np.array([4.0, 1.0, 0.5]), 2.0, 300
    q = pool_error_spread(lam, noise, n, 200_000, rng, "gaussian")
    total = lam.sum() + noise
    assert q.mean() == pytest.approx(1.0, abs=0.01)
    # Var(sum lam xi^2) = 2 sum lam^2; Var(noise chi^2_n / n) = 2 noise^2 / n
    expected = (2 * (lam**2).sum() + 2 * noise**2 / n) / total**2
    assert q.var() == pytest.approx(expected, rel=0.03)
    t = pool_error_spread(lam, noise, n, 200_000, rng, "multivariate_t", dof=5.0)
    assert t.mean() == pytest.approx(1.0, abs=0.02)
    assert t.var() > 1.5 * q.var()
    assert np.all(pool_error_spread(lam, noise, n, 10, rng, "none") == 1.0)
    with pytest.raises(ValueError, match="spread"):
        pool_error_spread(lam, noise, n, 10, rng, "bootstrap")


def test_posterior_interval_holds_the_realised_pool_error_at_its_level():
    """Pools whose errors are drawn from a known Gaussian posterior: the 90 % interval
    with the spread of the shared weight error holds the realised pool RMSE about 90 %
    of the time; the interval of the expected error alone does not."""
    rng = np.random.default_rng(13)
    X = rng.normal(size=(500, 4))
    Sigma = np.diag([4e-5, 1e-5, 2e-6, 1e-6])  # a few dominant directions
    noise_sd = 1e-3
    sd = np.sqrt(((X @ Sigma) * X).sum(axis=1) + noise_sd**2)
    lam = epistemic_eigenvalues(X.T @ X, Sigma)
    r = np.zeros(0)
    held = {"gaussian": 0, "none": 0}
    reps = 150
    for _ in range(reps):
        w = rng.multivariate_normal(np.zeros(4), Sigma)
        truth = np.sqrt(np.mean((X @ w + noise_sd * rng.normal(size=500)) ** 2))
        z = rng.normal(size=300)  # calibrated held-out residuals
        for spread in held:
            est = posterior_estimate(
                r, sd, z, 0.9, rng, moments="empirical", eigenvalues=lam, spread=spread
            )
            held[spread] += est.rmse_low <= truth <= est.rmse_high
    assert 0.83 <= held["gaussian"] / reps <= 0.97
    assert held["none"] / reps < 0.6
