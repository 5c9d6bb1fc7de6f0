"""Validation metrics and the stopping-rule portfolio (pure numpy/scipy).

Accuracy is measured on labels the model did not train on: :func:`cross_validate`
refits the surrogate (hyperparameters included) on each training fold and predicts
the held-out fold. The metrics of those out-of-fold predictions feed the stopping
rules, each of which reports its value, its threshold and whether it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm

from alcampaign.surrogate import Prediction, Surrogate

METRIC_NAMES = ("rmse", "mae", "ece", "max_std_residual")


def kfold_indices(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split ``range(n)`` into ``min(k, n)`` shuffled folds of near-equal size."""
    k = max(2, min(k, n))
    return [np.sort(f) for f in np.array_split(rng.permutation(n), k)]


def cross_validate(
    make_model: Callable[[], Surrogate],
    X: np.ndarray,
    y: np.ndarray,
    k: int,
    rng: np.random.Generator,
) -> Prediction:
    """Out-of-fold predictions from k-fold cross-validation.

    Parameters
    ----------
    make_model
        Returns a new, unfitted surrogate.
    X, y
        Labelled features and targets.
    k
        Number of folds (at most ``len(y)``; ``k >= len(y)`` is leave-one-out).
    rng
        Source of the fold assignment.

    Returns
    -------
    Prediction
        For each label, the prediction of a model that did not see it.
    """
    n = len(y)
    if n < 3:
        raise ValueError(f"cross-validation needs at least 3 labels, got {n}")
    mean, epi, ale = np.empty(n), np.empty(n), np.empty(n)
    for test in kfold_indices(n, k, rng):
        train = np.setdiff1d(np.arange(n), test)
        pred = make_model().fit(X[train], y[train]).predict(X[test])
        mean[test], epi[test], ale[test] = pred.mean, pred.epistemic_var, pred.aleatoric_var
    return Prediction(mean, epi, ale)


def expected_calibration_error(
    y: np.ndarray, mean: np.ndarray, std: np.ndarray, levels: np.ndarray | None = None
) -> float:
    """Expected calibration error of Gaussian predictive distributions.

    For each confidence level ``p`` the central interval ``mean +/- z_p std`` should
    contain a fraction ``p`` of the observations. The ECE is the mean absolute gap
    between the observed and the nominal fractions over the levels.

    Parameters
    ----------
    y, mean, std
        Observations and the predictive mean and standard deviation for each.
    levels
        Nominal coverages; default ``0.05, 0.15, ..., 0.95``.
    """
    if levels is None:
        levels = np.arange(0.05, 1.0, 0.1)
    z = np.abs(np.asarray(y) - np.asarray(mean)) / np.asarray(std)
    half_widths = norm.ppf(0.5 + 0.5 * np.asarray(levels))
    observed = (z[None, :] <= half_widths[:, None]).mean(axis=1)
    return float(np.mean(np.abs(observed - levels)))


def validation_metrics(y: np.ndarray, prediction: Prediction) -> dict[str, float]:
    """RMSE, MAE, ECE and maximum standardised residual of held-out predictions."""
    resid = np.asarray(y) - prediction.mean
    std = prediction.std
    return {
        "rmse": float(np.sqrt(np.mean(resid**2))),
        "mae": float(np.mean(np.abs(resid))),
        "ece": expected_calibration_error(y, prediction.mean, std),
        "max_std_residual": float(np.max(np.abs(resid) / std)),
    }


@dataclass
class Criterion:
    """One stopping criterion judged at one iteration.

    Attributes
    ----------
    name
        Which criterion (``budget``, ``rmse``, ...).
    value
        The measured value, or ``None`` when it cannot be measured yet.
    threshold
        The configured threshold.
    met
        Whether the criterion holds.
    kind
        ``"limit"`` criteria stop the campaign on their own (a budget is spent);
        ``"quality"`` criteria stop it only when all of them hold together.
    """

    name: str
    value: float | None
    threshold: float
    met: bool
    kind: str


@dataclass
class Decision:
    """The verdict of the stopping portfolio at one iteration."""

    stop: bool
    reason: str | None
    criteria: list[Criterion]
    failed: bool = False

    def to_dict(self) -> dict:
        """Plain-dict form for the campaign document."""
        return {
            "stop": self.stop,
            "failed": self.failed,
            "reason": self.reason,
            "criteria": [asdict(c) for c in self.criteria],
        }


def judge(
    n_oracle_calls: int,
    metrics: dict[str, float | None],
    *,
    max_oracle_calls: int,
    rmse_target: float | None = None,
    mae_target: float | None = None,
    min_labels: int = 0,
    n_failed: int = 0,
    max_failure_fraction: float = 1.0,
) -> Decision:
    """Judge the stopping portfolio.

    The campaign stops when a limit is reached (the oracle budget), or when every
    configured quality target holds on cross-validated metrics and at least
    ``min_labels`` labels exist. With no quality target configured only the budget
    can stop it. It *fails* when more than ``max_failure_fraction`` of the oracle
    calls failed.

    Parameters
    ----------
    n_oracle_calls
        Oracle calls spent so far (successful or failed: both cost).
    metrics
        Cross-validated metrics; a value of ``None`` has not been measured yet.
    n_failed, max_failure_fraction
        Oracle calls that failed, and the largest tolerated fraction of them.
    max_oracle_calls
        Oracle budget.
    rmse_target, mae_target
        Upper thresholds on the held-out RMSE and MAE (eV/atom), or ``None``.
    min_labels
        Quality criteria are not trusted below this many labels.
    """
    criteria = [
        Criterion(
            "budget",
            float(n_oracle_calls),
            float(max_oracle_calls),
            n_oracle_calls >= max_oracle_calls,
            "limit",
        ),
    ]
    enough = n_oracle_calls >= min_labels
    for name, target in (("rmse", rmse_target), ("mae", mae_target)):
        if target is None:
            continue
        value = metrics.get(name)
        criteria.append(
            Criterion(
                name,
                value,
                float(target),
                bool(enough and value is not None and value <= target),
                "quality",
            )
        )
    failure_fraction = n_failed / n_oracle_calls if n_oracle_calls else 0.0
    failures = Criterion(
        "failure_fraction",
        failure_fraction,
        float(max_failure_fraction),
        failure_fraction > max_failure_fraction,
        "limit",
    )
    criteria.append(failures)
    if failures.met:
        reason = (
            f"{n_failed} of {n_oracle_calls} oracle calls failed (more than "
            f"max_failure_fraction={max_failure_fraction:g}); see the failed labels"
        )
        return Decision(True, reason, criteria, failed=True)
    quality = [c for c in criteria if c.kind == "quality"]
    if quality and all(c.met for c in quality):
        reason = "targets met: " + ", ".join(
            f"{c.name} {c.value:.4g} <= {c.threshold:.4g}" for c in quality
        )
        return Decision(True, reason, criteria)
    if criteria[0].met:
        return Decision(
            True, f"oracle budget spent ({n_oracle_calls}/{max_oracle_calls})", criteria
        )
    return Decision(False, None, criteria)
