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

from alcampaign.science.surrogate import Prediction, Surrogate

METRIC_NAMES = ("rmse", "mae", "ece", "max_std_residual", "force_rmse", "force_mae")


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


@dataclass
class StoppingThresholds:
    """Thresholds of the stopping portfolio (``None`` switches a criterion off).

    Limits (each stops the campaign alone): ``max_oracle_calls``, ``max_cost``, the
    validation-error ``plateau`` over ``plateau_window`` iterations, and
    ``max_failure_fraction`` (which *fails* the campaign). Quality targets (all must
    hold, from ``min_labels`` oracle calls on): RMSE, MAE, force RMSE and MAE, ECE and
    the maximum standardised residual, each an upper bound.
    """

    max_oracle_calls: int
    max_cost: float | None = None
    rmse_target: float | None = None
    mae_target: float | None = None
    force_rmse_target: float | None = None
    force_mae_target: float | None = None
    ece_target: float | None = None
    max_std_residual_target: float | None = None
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
    for metric, attr in QUALITY_TARGETS.items():
        target = getattr(t, attr)
        if target is None:
            continue
        value = metrics.get(metric)
        criteria.append(
            Criterion(
                metric,
                value,
                float(target),
                bool(enough and value is not None and value <= target),
                "quality",
            )
        )

    if failures.met:
        reason = (
            f"{n_failed} of {n_oracle_calls} oracle calls failed (more than "
            f"max_failure_fraction={t.max_failure_fraction:g}); see the failed labels"
        )
        return Decision(True, reason, criteria, failed=True)
    quality = [c for c in criteria if c.kind == "quality"]
    if quality and all(c.met for c in quality):
        reason = "targets met: " + ", ".join(
            f"{c.name} {c.value:.4g} <= {c.threshold:.4g}" for c in quality
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
