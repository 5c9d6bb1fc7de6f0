"""Calibration measures, variance recalibration and the n-aware outlier threshold."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from alcampaign.science.calibration import (
    CALIBRATIONS,
    IsotonicCalibration,
    StudentTCalibration,
    VarianceCalibration,
    calibration_from_dict,
    calibration_metrics,
    coverage,
    cross_fitted_z,
    ece_of_z,
    expected_calibration_error,
    fit_calibration,
    fit_scale,
    max_residual_threshold,
    miscalibration_area,
    sharpness,
)
from alcampaign.science.surrogate import Prediction


def test_coverage_matches_closed_form_on_known_residuals():
    # |z| = 0.5 for all: inside every interval whose half width exceeds 0.5.
    z = np.full(10, 0.5)
    levels = np.array([0.2, 0.5, 0.9])
    assert coverage(z, levels).tolist() == [0.0, 1.0, 1.0]  # half widths 0.25, 0.67, 1.64
    assert ece_of_z(z, levels) == pytest.approx(np.mean([0.2, 0.5, 0.1]))


def test_signed_area_tells_over_from_under_confidence():
    rng = np.random.default_rng(0)
    y = rng.normal(size=4000)
    mean, std = np.zeros_like(y), np.ones_like(y)
    over = miscalibration_area(y, mean, std / 3)
    under = miscalibration_area(y, mean, std * 3)
    assert over < -0.3 and under > 0.2
    # The ECE cannot tell the two apart; the signed area can.
    assert expected_calibration_error(y, mean, std / 3) > 0.3
    assert expected_calibration_error(y, mean, std * 3) > 0.2
    assert abs(miscalibration_area(y, mean, std)) < 0.02
    assert sharpness(std * 3) == pytest.approx(3.0)


def test_over_confident_gaussian_is_recalibrated_to_small_ece():
    rng = np.random.default_rng(1)
    n = 2000
    std = rng.uniform(0.5, 2.0, n)  # predicted
    y = rng.normal(0.0, 2.0 * std)  # true spread twice the predicted
    mean = np.zeros(n)
    assert expected_calibration_error(y, mean, std) > 0.2
    cal = VarianceCalibration.fit(y, mean, std)
    assert cal.scale == pytest.approx(2.0, rel=0.06)
    assert expected_calibration_error(y, mean, cal.scale * std) <= 0.02
    # ...and on fresh data from the same model, not only on the residuals it saw.
    std2 = rng.uniform(0.5, 2.0, n)
    y2 = rng.normal(0.0, 2.0 * std2)
    assert expected_calibration_error(y2, np.zeros(n), cal.scale * std2) <= 0.02
    assert abs(miscalibration_area(y2, np.zeros(n), cal.scale * std2)) <= 0.02


def test_scale_resists_heavy_tails_where_rms_scale_does_not():
    rng = np.random.default_rng(2)
    z = rng.standard_t(df=2.5, size=3000)
    s = fit_scale(z)
    rms = float(np.sqrt(np.mean(z**2)))
    assert ece_of_z(z / s) < ece_of_z(z / rms)
    assert ece_of_z(z / s) < 0.03


def test_weighted_scale_follows_the_weights():
    z = np.r_[np.full(50, 0.6745), np.full(50, 3 * 0.6745)]  # medians of |N(0,1)|, |N(0,9)|
    w = np.r_[np.ones(50), np.full(50, 1e-6)]
    assert fit_scale(z, w) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="weights"):
        fit_scale(z, -w)


def test_calibration_apply_and_document_round_trip():
    cal = VarianceCalibration(2.0, 30)
    p = cal.apply(Prediction(np.ones(2), np.array([1.0, 4.0]), np.array([0.5, 0.5])))
    assert p.epistemic_var.tolist() == [4.0, 16.0] and p.aleatoric_var.tolist() == [2.0, 2.0]
    assert VarianceCalibration.from_dict(cal.to_dict()) == cal
    assert VarianceCalibration.from_dict(None).scale == 1.0
    with pytest.raises(ValueError, match="calibration kind"):
        VarianceCalibration.from_dict({"kind": "isotonic", "knots": []})


def test_few_residuals_leave_the_model_as_it_is():
    cal = VarianceCalibration.fit(np.ones(3), np.zeros(3), np.ones(3))
    assert cal.scale == 1.0 and cal.n == 3
    with pytest.raises(ValueError, match="positive"):
        VarianceCalibration.fit(np.ones(6), np.zeros(6), np.zeros(6))


def test_cross_fitted_ece_is_not_optimistic():
    rng = np.random.default_rng(3)
    z = 1.7 * rng.normal(size=30)
    zc = cross_fitted_z(z, 5, rng)
    in_sample = ece_of_z(z / fit_scale(z))
    assert ece_of_z(zc) >= in_sample - 1e-12
    m = calibration_metrics(z, zc, np.ones(30))
    assert m["ece"] == pytest.approx(ece_of_z(zc))
    assert m["max_std_residual_threshold"] == pytest.approx(max_residual_threshold(30))


def test_max_residual_threshold_closed_form():
    assert max_residual_threshold(1, 0.05) == pytest.approx(norm.ppf(0.975))
    assert max_residual_threshold(1000) > max_residual_threshold(10) > 2.5
    with pytest.raises(ValueError):
        max_residual_threshold(0)
    with pytest.raises(ValueError):
        max_residual_threshold(10, 1.5)


@pytest.mark.parametrize("n", [10, 1000])
def test_max_residual_threshold_holds_its_level_on_calibrated_data(n):
    rng = np.random.default_rng(n)
    trials = 4000
    t = max_residual_threshold(n, 0.05)
    exceed = np.empty(trials, dtype=bool)
    for lo in range(0, trials, 500):  # 500 trials at a time: bounded memory
        z = rng.normal(size=(500, n))
        exceed[lo : lo + 500] = np.abs(z).max(axis=1) > t
    # Binomial standard error at 4000 trials: 0.0034.
    assert abs(exceed.mean() - 0.05) < 0.012


def test_a_fixed_threshold_of_three_does_not_hold_its_level():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(4000, 100))
    assert (np.abs(z).max(axis=1) > 3.0).mean() > 0.2  # a calibrated model fails it often


@pytest.mark.parametrize("kind", sorted(CALIBRATIONS))
def test_every_recalibration_fixes_an_over_confident_gaussian(kind):
    # The test: true spread twice the predicted, n = 2000, ECE <= 0.02 after
    # recalibration, judged on fresh data by the recalibrated predictive's own intervals.
    rng = np.random.default_rng(11)
    n = 2000
    std = rng.uniform(0.5, 2.0, n)
    y = rng.normal(0.0, 2.0 * std)
    z = y / std
    assert ece_of_z(z) > 0.15
    cal = fit_calibration(kind, z)
    assert cal.std_factor == pytest.approx(2.0, rel=0.06)
    assert ece_of_z(cal.normalise(z)) <= 0.02
    std2 = rng.uniform(0.5, 2.0, n)
    z2 = rng.normal(0.0, 2.0 * std2) / std2
    assert ece_of_z(cal.normalise(z2)) <= 0.02
    assert abs(float(np.mean(coverage(cal.normalise(z2)) - np.arange(0.05, 1, 0.1)))) <= 0.02


@pytest.mark.parametrize("kind", ["student_t", "isotonic"])
def test_heavy_tailed_residuals_are_recalibrated_better_than_by_one_scale(kind):
    rng = np.random.default_rng(12)
    z, fresh = rng.standard_t(3, 2000), rng.standard_t(3, 2000)
    one_scale = fit_calibration("variance", z)
    cal = fit_calibration(kind, z)
    assert ece_of_z(cal.normalise(fresh)) < ece_of_z(one_scale.normalise(fresh))
    assert ece_of_z(cal.normalise(fresh)) <= 0.02


def test_student_t_finds_its_degrees_of_freedom_and_its_moments():
    rng = np.random.default_rng(13)
    cal = StudentTCalibration.fit_z(1.5 * rng.standard_t(4, 4000))
    assert 3 <= cal.dof <= 7 and cal.scale_t == pytest.approx(1.5, rel=0.1)
    assert cal.std_factor == pytest.approx(cal.scale_t * np.sqrt(cal.dof / (cal.dof - 2)))
    # Gaussian residuals: the largest dof on the grid, the scale of the data.
    g = StudentTCalibration.fit_z(0.5 * rng.normal(size=4000))
    assert g.dof >= 30 and g.std_factor == pytest.approx(0.5, rel=0.05)


def test_isotonic_map_is_the_empirical_cdf_and_its_moments_are_exact():
    z = np.array([-0.3, 0.5, 1.0, -2.0, 0.5])
    cal = IsotonicCalibration.fit_z(z)
    assert cal.knots == (0.3, 0.5, 1.0, 2.0)
    # plotting positions k / (n + 1); the tie at 0.5 keeps the larger cumulative weight
    assert cal.tails == pytest.approx((1 - 1 / 6, 1 - 3 / 6, 1 - 4 / 6, 1 - 5 / 6))
    assert cal.tail(np.array([0.0, 1.0]))[1] == pytest.approx(1 - 4 / 6)
    assert cal.tail(np.array([0.0]))[0] == pytest.approx(1.0)
    # Moments against numerical integration of the recalibrated |Z'| density.
    a = np.linspace(0, 12, 400001)
    cdf = 1 - cal.tail(a)
    dens = np.gradient(cdf, a)
    m2 = np.trapezoid(a**2 * dens, a)
    assert cal.std_factor**2 == pytest.approx(m2, rel=1e-3)
    # The identity when fitted on standard normals, as n grows.
    big = IsotonicCalibration.fit_z(np.random.default_rng(14).normal(size=20000))
    assert big.std_factor == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("kind", sorted(CALIBRATIONS))
def test_every_recalibration_round_trips_through_its_document(kind):
    rng = np.random.default_rng(15)
    cal = fit_calibration(kind, 1.3 * rng.normal(size=40))
    back = calibration_from_dict(cal.to_dict())
    z = np.linspace(-4, 4, 17)
    assert back.normalise(z) == pytest.approx(cal.normalise(z))
    assert back.std_factor == pytest.approx(cal.std_factor)
    p = back.apply(Prediction(np.zeros(2), np.ones(2), np.zeros(2)))
    assert p.std == pytest.approx(np.full(2, cal.std_factor))
    assert calibration_from_dict(None).std_factor == 1.0
    with pytest.raises(ValueError, match="calibration kind"):
        calibration_from_dict({"kind": "conformal"})
    with pytest.raises(ValueError, match="unknown calibration"):
        fit_calibration("conformal", np.ones(10))


@pytest.mark.parametrize("kind", sorted(CALIBRATIONS))
def test_normalised_residuals_keep_sign_and_order(kind):
    rng = np.random.default_rng(16)
    cal = fit_calibration(kind, rng.standard_t(5, 50))
    z = np.linspace(-6, 6, 41)
    zn = cal.normalise(z)
    assert np.all(np.diff(zn) > 0) and np.all(np.sign(zn) == np.sign(z))
    assert np.isfinite(cal.normalise(np.array([1e3]))).all()
