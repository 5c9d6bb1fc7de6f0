"""Calibration measures, variance recalibration and the n-aware outlier threshold."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from alcampaign.science.calibration import (
    VarianceCalibration,
    calibration_metrics,
    coverage,
    cross_fitted_z,
    ece_of_z,
    expected_calibration_error,
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
        VarianceCalibration.from_dict({"kind": "isotonic"})


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
