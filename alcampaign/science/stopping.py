"""Validation metrics and the stopping-rule portfolio (pure numpy/scipy).

Accuracy is measured on labels the model did not train on: :func:`cross_validate`
refits the surrogate (hyperparameters included) on each training fold and predicts
the held-out fold. From those out-of-fold predictions the controller recalibrates the
predictive and estimates the pool-wide error with an interval
(:mod:`alcampaign.science.validation`); the stopping rules judge those, each
reporting its value, its threshold and whether it holds. The RMSE and MAE targets
are met only when the *upper end* of the estimate's interval is below them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from alcampaign.science.calibration import expected_calibration_error, max_residual_threshold
from alcampaign.science.surrogate import Prediction, Surrogate

# The numeric metrics of an iteration (eV/atom for energies). ``rmse``/``mae`` are the
# configured pool-wide estimate, with its interval in ``*_low``/``*_high``; ``cv_*`` are
# plain cross-validation; ``ece``, ``miscalibration_area``, ``sharpness`` and
# ``max_std_residual`` describe the recalibrated predictive on held-out labels.
METRIC_NAMES = (
    "rmse",
    "mae",
    "ece",
    "max_std_residual",
    "force_rmse",
    "force_mae",
    "rmse_low",
    "rmse_high",
    "mae_low",
    "mae_high",
    "cv_rmse",
    "cv_mae",
    "ece_uncalibrated",
    "miscalibration_area",
    "sharpness",
    "max_std_residual_threshold",
    "calibration_scale",
)


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
    kind: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> Prediction:
    """Out-of-fold predictions from k-fold cross-validation.

    Parameters
    ----------
    make_model
        Returns a new, unfitted surrogate.
    X, y
        Rows and targets.
    k
        Number of folds (``k >= number of groups`` is leave-one-out).
    rng
        Source of the fold assignment.
    kind
        Row kinds (0 energy, 1 force or second noise group); default all energy.
    groups
        Rows with the same group id are held out together (the energy and force rows of
        one structure); a negative id marks rows that are always trained on and never
        predicted (e.g. cheap-fidelity labels). Default: every row its own group.

    Returns
    -------
    Prediction
        For each held-out row, the prediction of a model that did not see its group;
        ``nan`` for rows never held out.
    """
    n = len(y)
    kind = np.zeros(n, dtype=int) if kind is None else np.asarray(kind)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    ids = np.unique(groups[groups >= 0])
    if ids.size < 3:
        raise ValueError(f"cross-validation needs at least 3 labelled structures, got {ids.size}")
    mean, epi, ale = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for fold in kfold_indices(ids.size, k, rng):
        test = np.isin(groups, ids[fold])
        model = make_model().fit(X[~test], y[~test], kind[~test])
        for g in np.unique(kind[test]):
            rows = test & (kind == g)
            pred = model.predict(X[rows], kind=int(g))
            mean[rows], epi[rows], ale[rows] = pred.mean, pred.epistemic_var, pred.aleatoric_var
    return Prediction(mean, epi, ale)


def validation_metrics(
    y: np.ndarray, prediction: Prediction, kind: np.ndarray | None = None
) -> dict[str, float | None]:
    """Metrics of held-out predictions: energies (RMSE, MAE, ECE, max standardised
    residual) and, where force rows were held out, force RMSE and MAE.

    Rows whose prediction is ``nan`` (never held out) are ignored.
    """
    y = np.asarray(y, dtype=float)
    kind = np.zeros(len(y), dtype=int) if kind is None else np.asarray(kind)
    held = np.isfinite(prediction.mean)
    out: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    energy = held & (kind == 0)
    if energy.any():
        p = prediction.subset(energy)
        resid = y[energy] - p.mean
        out.update(
            rmse=float(np.sqrt(np.mean(resid**2))),
            mae=float(np.mean(np.abs(resid))),
            ece=expected_calibration_error(y[energy], p.mean, p.std),
            max_std_residual=float(np.max(np.abs(resid) / p.std)),
        )
    force = held & (kind == 1)
    if force.any():
        resid = y[force] - prediction.mean[force]
        out.update(
            force_rmse=float(np.sqrt(np.mean(resid**2))), force_mae=float(np.mean(np.abs(resid)))
        )
    return out


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
    estimate
        For ``rmse``/``mae``: which pool-wide estimate was judged (``posterior``,
        ``iwcv``, ``cv``, ``audit``); ``value`` is then the upper end of its interval.
    interval
        For ``rmse``/``mae``: ``[point, low, high]`` of the estimate.
    """

    name: str
    value: float | None
    threshold: float
    met: bool
    kind: str
    estimate: str | None = None
    interval: list[float] | None = None


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


@dataclass
class StoppingThresholds:
    """Thresholds of the stopping portfolio (``None`` switches a criterion off).

    Limits (each stops the campaign alone): ``max_oracle_calls``, ``max_cost``, the
    validation-error ``plateau`` over ``plateau_window`` iterations, and
    ``max_failure_fraction`` (which *fails* the campaign). Quality targets (all must
    hold, from ``min_labels`` oracle calls on): RMSE and MAE (the upper end of the
    pool-wide estimate's interval), force RMSE and MAE, ECE and the maximum
    standardised residual, each an upper bound. ``max_std_residual_alpha`` replaces the
    fixed residual bound by the Sidak threshold of the number of held-out residuals.
    """

    max_oracle_calls: int
    max_cost: float | None = None
    rmse_target: float | None = None
    mae_target: float | None = None
    force_rmse_target: float | None = None
    force_mae_target: float | None = None
    ece_target: float | None = None
    max_std_residual_target: float | None = None
    max_std_residual_alpha: float | None = None
    plateau_window: int | None = None
    plateau_tolerance: float = 0.05
    min_labels: int = 0
    max_failure_fraction: float = 1.0


QUALITY_TARGETS = {
    "rmse": "rmse_target",
    "mae": "mae_target",
    "force_rmse": "force_rmse_target",
    "force_mae": "force_mae_target",
    "ece": "ece_target",
    "max_std_residual": "max_std_residual_target",
}


def plateau_gain(rmse_history: list[float | None], window: int) -> float | None:
    """Relative improvement of the best RMSE over the last ``window`` iterations.

    ``(rmse[-window-1] - min(rmse[-window:])) / rmse[-window-1]``; ``None`` until
    ``window + 1`` values exist.
    """
    values = [v for v in rmse_history if v is not None]
    if len(values) < window + 1:
        return None
    before = values[-window - 1]
    return float((before - min(values[-window:])) / before) if before > 0 else 0.0


def _interval(metrics: dict, name: str) -> tuple[float | None, list[float] | None, str | None]:
    """Upper end, ``[point, low, high]`` and method of the pool-wide estimate of a metric."""
    point, high = metrics.get(name), metrics.get(f"{name}_high")
    if point is None or high is None:
        return point, None, None
    method = (metrics.get("accuracy") or {}).get("method")
    return high, [point, metrics.get(f"{name}_low"), high], method


def quality_criteria(
    t: StoppingThresholds, metrics: dict, enough: bool, n_labels: int
) -> list[Criterion]:
    """The quality criteria that have a target.

    RMSE and MAE are judged on the upper end of their estimate's interval; the largest
    standardised residual against a fixed bound or, with ``max_std_residual_alpha``,
    the Sidak threshold for the number of held-out residuals.
    """
    out = []
    for metric, attr in QUALITY_TARGETS.items():
        target = getattr(t, attr)
        if target is None:
            continue
        value, interval, estimate = metrics.get(metric), None, None
        if metric in ("rmse", "mae"):
            value, interval, estimate = _interval(metrics, metric)
        met = bool(enough and value is not None and value <= target)
        out.append(Criterion(metric, value, float(target), met, "quality", estimate, interval))
    if t.max_std_residual_alpha is not None:
        value = metrics.get("max_std_residual")
        threshold = metrics.get("max_std_residual_threshold") or max_residual_threshold(
            max(n_labels, 1), t.max_std_residual_alpha
        )
        met = bool(enough and value is not None and value <= threshold)
        out.append(Criterion("max_std_residual", value, float(threshold), met, "quality"))
    return out


def judge(
    t: StoppingThresholds,
    n_oracle_calls: int,
    metrics: dict[str, float | None],
    *,
    cost_spent: float = 0.0,
    n_failed: int = 0,
    rmse_history: list[float | None] | None = None,
) -> Decision:
    """Judge the stopping portfolio.

    Parameters
    ----------
    t
        The thresholds.
    n_oracle_calls
        Calls to the dear oracle so far (successful or failed: both cost).
    metrics
        Cross-validated metrics; ``None`` where not measured yet.
    cost_spent
        Total cost of every label at every fidelity.
    n_failed
        Oracle calls that failed.
    rmse_history
        Cross-validated RMSE of every iteration so far, this one included.

    Returns
    -------
    Decision
        Whether to stop (or fail), why, and every criterion with its value, threshold
        and whether it holds.
    """
    enough = n_oracle_calls >= t.min_labels
    criteria = [
        Criterion(
            "budget",
            float(n_oracle_calls),
            float(t.max_oracle_calls),
            n_oracle_calls >= t.max_oracle_calls,
            "limit",
        )
    ]
    if t.max_cost is not None:
        criteria.append(
            Criterion(
                "cost", float(cost_spent), float(t.max_cost), cost_spent >= t.max_cost, "limit"
            )
        )
    if t.plateau_window:
        gain = plateau_gain(rmse_history or [], t.plateau_window)
        criteria.append(
            Criterion(
                "plateau",
                gain,
                t.plateau_tolerance,
                bool(enough and gain is not None and gain < t.plateau_tolerance),
                "limit",
            )
        )
    failure_fraction = n_failed / n_oracle_calls if n_oracle_calls else 0.0
    failures = Criterion(
        "failure_fraction",
        failure_fraction,
        float(t.max_failure_fraction),
        failure_fraction > t.max_failure_fraction,
        "limit",
    )
    criteria.append(failures)
    criteria += quality_criteria(t, metrics, enough, n_oracle_calls)

    if failures.met:
        reason = (
            f"{n_failed} of {n_oracle_calls} oracle calls failed (more than "
            f"max_failure_fraction={t.max_failure_fraction:g}); see the failed labels"
        )
        return Decision(True, reason, criteria, failed=True)
    quality = [c for c in criteria if c.kind == "quality"]
    if quality and all(c.met for c in quality):
        reason = "targets met: " + ", ".join(
            f"{c.name}{' upper bound' if c.interval else ''} {c.value:.4g} <= {c.threshold:.4g}"
            for c in quality
        )
        return Decision(True, reason, criteria)
    reasons = {
        "budget": f"oracle budget spent ({n_oracle_calls}/{t.max_oracle_calls})",
        "cost": f"cost budget spent ({cost_spent:.4g}/{t.max_cost})",
        "plateau": f"plateau: validation RMSE improved by less than {t.plateau_tolerance:.0%} over "
        f"{t.plateau_window} iterations",
    }
    for c in criteria:
        if c.kind == "limit" and c.met:
            return Decision(True, reasons[c.name], criteria)
    return Decision(False, None, criteria)


def judge_missing_ground_states(
    decision: Decision,
    expected_missing: float | None,
    threshold: float,
    n_oracle_calls: int,
    min_labels: int = 0,
) -> Decision:
    """Add the ``missing_ground_states`` criterion to a decision of :func:`judge`.

    The criterion holds when the expected number of convex-hull ground states not yet
    labelled, ``sum P(on hull)`` over unlabelled candidates from the sampled hulls
    (:class:`~alcampaign.science.hull.GroundStateEstimate`), is below ``threshold``, from
    ``min_labels`` oracle calls on. It stops the campaign on its own (kind ``limit``): a
    ground-state search is done when every ground state has probably been labelled,
    whatever the accuracy elsewhere. A decision that stops already keeps its reason.

    Parameters
    ----------
    decision
        The portfolio's verdict (modified in place and returned).
    expected_missing
        The estimate, ``None`` when there is none yet (no model).
    threshold
        Stop below this many expected missing ground states.
    n_oracle_calls
        Oracle calls so far.
    min_labels
        No stop before this many calls.
    """
    met = bool(
        expected_missing is not None
        and n_oracle_calls >= min_labels
        and expected_missing < threshold
    )
    decision.criteria.append(
        Criterion("missing_ground_states", expected_missing, float(threshold), met, "limit")
    )
    if met and not decision.stop:
        decision.stop = True
        decision.reason = (
            f"ground states found: expected missing {expected_missing:.3g} < {threshold:g}"
        )
    return decision
