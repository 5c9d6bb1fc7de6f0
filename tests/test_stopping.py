"""Validation metrics and the stopping portfolio."""

import numpy as np
import pytest

from alcampaign.stopping import (
    cross_validate,
    expected_calibration_error,
    judge,
    kfold_indices,
    validation_metrics,
)
from alcampaign.surrogate import BayesianLinearRegression, Prediction


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
    with pytest.raises(ValueError, match="at least 3"):
        cross_validate(BayesianLinearRegression, X[:2], y[:2], 2, rng)


def test_judge_budget_and_targets():
    metrics = {"rmse": 0.02, "mae": 0.01}
    d = judge(10, metrics, max_oracle_calls=20, rmse_target=0.01, min_labels=5)
    assert not d.stop and [c.name for c in d.criteria] == ["budget", "rmse", "failure_fraction"]
    d = judge(20, metrics, max_oracle_calls=20, rmse_target=0.01)
    assert d.stop and "budget" in d.reason
    d = judge(10, {"rmse": 0.005}, max_oracle_calls=20, rmse_target=0.01, min_labels=5)
    assert d.stop and "rmse" in d.reason
    # Below min_labels a met target does not count.
    assert not judge(3, {"rmse": 0.005}, max_oracle_calls=20, rmse_target=0.01, min_labels=5).stop
    # Unmeasured metric.
    assert not judge(10, {"rmse": None}, max_oracle_calls=20, rmse_target=0.01).stop
    # Both targets must hold.
    assert not judge(
        10, {"rmse": 0.005, "mae": 0.02}, max_oracle_calls=20, rmse_target=0.01, mae_target=0.01
    ).stop
    # Too many failed oracle calls: the campaign fails.
    d = judge(
        10,
        {"rmse": 0.005},
        max_oracle_calls=20,
        rmse_target=0.01,
        n_failed=6,
        max_failure_fraction=0.5,
    )
    assert d.stop and d.failed and "6 of 10" in d.reason
    assert not judge(10, {}, max_oracle_calls=20, n_failed=5, max_failure_fraction=0.5).stop
