"""Validation metrics and the stopping portfolio."""

import numpy as np
import pytest

from alcampaign.science.calibration import expected_calibration_error
from alcampaign.science.stopping import (
    StoppingThresholds,
    cross_validate,
    judge,
    kfold_indices,
    plateau_gain,
    validation_metrics,
)
from alcampaign.science.surrogate import BayesianLinearRegression, Prediction


def test_ece_calibrated_and_overconfident():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=20000)
    std = rng.uniform(0.5, 2.0, size=20000)
    y = mean + std * rng.normal(size=20000)
    assert expected_calibration_error(y, mean, std) < 0.01
    assert expected_calibration_error(y, mean, std / 5) > 0.3


def test_metrics_closed_form():
    y = np.array([0.0, 1.0, 2.0])
    pred = Prediction(np.array([0.0, 2.0, 2.0]), np.array([0.0, 0.0, 0.0]), np.full(3, 0.25))
    m = validation_metrics(y, pred)
    assert m["rmse"] == pytest.approx(np.sqrt(1 / 3))
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["max_std_residual"] == pytest.approx(2.0)


def test_kfold_partitions():
    folds = kfold_indices(11, 4, np.random.default_rng(0))
    assert sorted(np.concatenate(folds).tolist()) == list(range(11))
    assert len(folds) == 4


def test_cross_validation_predicts_held_out_labels():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    n = len(y)
    cv = cross_validate(lambda: BayesianLinearRegression(1.0, 100.0), X, y, n, rng)  # LOO
    for i in range(n):
        keep = np.arange(n) != i
        ref = BayesianLinearRegression(1.0, 100.0).fit(X[keep], y[keep]).predict(X[i : i + 1])
        assert cv.mean[i] == pytest.approx(ref.mean[0])
    with pytest.raises(ValueError, match="at least 3 labelled"):
        cross_validate(BayesianLinearRegression, X[:2], y[:2], 2, rng)


def T(**kw):
    return StoppingThresholds(**{"max_oracle_calls": 20, **kw})


def test_judge_budget_and_targets():
    metrics = {"rmse": 0.02, "mae": 0.01}
    d = judge(T(rmse_target=0.01, min_labels=5), 10, metrics)
    assert not d.stop and [c.name for c in d.criteria] == ["budget", "failure_fraction", "rmse"]
    d = judge(T(rmse_target=0.01), 20, metrics)
    assert d.stop and "budget" in d.reason
    d = judge(T(rmse_target=0.01, min_labels=5), 10, {"rmse": 0.005})
    assert d.stop and "rmse" in d.reason
    # Below min_labels a met target does not count.
    assert not judge(T(rmse_target=0.01, min_labels=5), 3, {"rmse": 0.005}).stop
    # Unmeasured metric.
    assert not judge(T(rmse_target=0.01), 10, {"rmse": None}).stop
    # Every quality target must hold.
    assert not judge(T(rmse_target=0.01, mae_target=0.01), 10, {"rmse": 0.005, "mae": 0.02}).stop
    full = {
        "rmse": 0.005,
        "mae": 0.004,
        "ece": 0.05,
        "max_std_residual": 2.5,
        "force_rmse": 0.05,
        "force_mae": 0.04,
    }
    t = T(
        rmse_target=0.01,
        mae_target=0.01,
        ece_target=0.1,
        max_std_residual_target=3.0,
        force_rmse_target=0.1,
        force_mae_target=0.1,
    )
    d = judge(t, 10, full)
    assert d.stop and {c.name for c in d.criteria if c.kind == "quality"} == set(full)
    assert not judge(t, 10, {**full, "ece": 0.2}).stop
    assert not judge(t, 10, {**full, "max_std_residual": 4.0}).stop
    # Too many failed oracle calls: the campaign fails.
    d = judge(T(rmse_target=0.01, max_failure_fraction=0.5), 10, {"rmse": 0.005}, n_failed=6)
    assert d.stop and d.failed and "6 of 10" in d.reason
    assert not judge(T(max_failure_fraction=0.5), 10, {}, n_failed=5).stop


def test_cost_budget_and_plateau():
    d = judge(T(max_cost=5.0), 3, {}, cost_spent=5.2)
    assert d.stop and "cost" in d.reason
    assert plateau_gain([0.1, 0.05, 0.049, 0.0495], 2) == pytest.approx(0.02)
    assert plateau_gain([0.1, 0.05], 2) is None
    t = T(plateau_window=2, plateau_tolerance=0.05)
    assert judge(t, 10, {}, rmse_history=[0.1, 0.05, 0.049, 0.0495]).stop
    assert not judge(t, 10, {}, rmse_history=[0.1, 0.05, 0.03, 0.02]).stop
    assert not judge(t, 10, {}, rmse_history=[0.1, 0.1]).stop


def test_cross_validation_groups_and_kinds():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 3))
    y = X @ np.array([1.0, 2.0, -1.0])
    kind = np.array([0, 1, 1] * 10)
    groups = np.repeat(np.arange(10), 3)
    groups[:3] = -1  # always trained on, never predicted
    cv = cross_validate(
        lambda: BayesianLinearRegression(1.0, 1e4, 1e4, center=False), X, y, 3, rng, kind, groups
    )
    assert np.isnan(cv.mean[:3]).all() and np.isfinite(cv.mean[3:]).all()
    m = validation_metrics(y, cv, kind)
    assert m["rmse"] < 0.05 and m["force_rmse"] < 0.05
    assert validation_metrics(y[kind == 0], cv.subset(kind == 0))["force_rmse"] is None
