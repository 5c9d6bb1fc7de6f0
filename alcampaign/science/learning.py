"""One controller iteration's science, on arrays: fit, validate, assess, select.

The controller job (``jobs.py``) reads the stores into arrays, calls these functions,
and writes the results back; nothing here touches a database or a workflow, so every
step is testable in milliseconds and reusable by the benchmarks.

Single fidelity: energy rows ``x`` with targets ``E`` (energy per atom).

Two linked fidelities (``cost_aware``): the dear oracle is the cheap fidelity plus a
learned correction, ``E_dear = w_c . x + w_d . x`` and ``E_cheap = w_c . x``, with
separate noise for each; each fidelity's targets are centred on their own mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alcampaign.config import CampaignConfig
from alcampaign.science.acquisition import (
    Pool,
    Selection,
    coverage_metrics,
    make_rule,
    multi_fidelity_rows,
)
from alcampaign.science.calibration import VarianceCalibration
from alcampaign.science.domain import ApplicabilityDomain
from alcampaign.science.stopping import METRIC_NAMES, cross_validate, validation_metrics
from alcampaign.science.surrogate import ENERGY, FORCE, Prediction, Surrogate, make_surrogate
from alcampaign.science.validation import HeldOut, assess, density_ratio


def design_features(kind: str, raw: np.ndarray) -> np.ndarray:
    """Turn stored feature vectors into surrogate rows.

    Cluster vectors are used as they are (their zerolet is the intercept). CHGNet
    embeddings are standardised over the pool and given a constant column.
    """
    if kind != "chgnet_embedding":
        return raw
    std = raw.std(axis=0)
    z = (raw - raw.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return np.column_stack([np.ones(len(raw)), z])


@dataclass
class TrainingData:
    """Labels as rows of the candidate feature matrix.

    Attributes
    ----------
    X
        Features of every candidate, ``(N, d)``.
    dear_index, dear_y
        Rows of ``X`` with a successful dear-oracle label, and the labels.
    cheap_index, cheap_y
        The same for the cheap fidelity (empty in single-fidelity campaigns).
    audit_index, audit_y
        The audit sample's rows and labels: never trained on, never acquired by a rule.
    """

    X: np.ndarray
    dear_index: np.ndarray
    dear_y: np.ndarray
    cheap_index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    cheap_y: np.ndarray = field(default_factory=lambda: np.empty(0))
    audit_index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    audit_y: np.ndarray = field(default_factory=lambda: np.empty(0))


@dataclass
class FittedModel:
    """A surrogate with what is needed to predict the dear oracle's energies."""

    model: Surrogate
    multi_fidelity: bool
    offsets: tuple[float, float] = (0.0, 0.0)  # (dear, cheap) target means (multi-fidelity)
    cv: Prediction | None = None  # out-of-fold predictions of the dear labels (eV/atom), raw
    calibration: VarianceCalibration = field(default_factory=VarianceCalibration)

    def rows(self, X: np.ndarray, cheap: bool = False) -> np.ndarray:
        """Model rows of candidates at the dear (or cheap) fidelity."""
        if not self.multi_fidelity:
            return X
        return np.hstack([X, np.zeros_like(X) if cheap else X])

    def predict(self, X: np.ndarray, calibrated: bool = True) -> Prediction:
        """Dear-oracle energy per atom at candidates ``X`` (recalibrated unless asked not)."""
        p = self.model.predict(self.rows(X), kind=ENERGY)
        if self.multi_fidelity:
            p.mean = p.mean + self.offsets[0]
        return self.calibration.apply(p) if calibrated else p

    def covariance(self) -> np.ndarray:
        """Posterior weight covariance on the recalibrated scale."""
        return self.model.covariance_ * self.calibration.scale**2

    def noise_variance(self, kind: int = ENERGY) -> float:
        """Noise variance of a row kind on the recalibrated scale."""
        return self.model.noise_variance(kind) * self.calibration.scale**2


def _new_surrogate(config: CampaignConfig, center: bool) -> Surrogate:
    s = config.surrogate
    kwargs = {"alpha": s.alpha, "beta": s.beta, "center": center}
    if s.kind == "ensemble":
        kwargs.update(n_members=s.n_members, seed=config.seed)
    return make_surrogate(s.kind, **kwargs)


def fit_and_validate(
    config: CampaignConfig, data: TrainingData, rng: np.random.Generator, validate: bool = True
) -> tuple[FittedModel, dict[str, float | None]]:
    """Fit the configured surrogate on every label and cross-validate it.

    Cross-validation holds out dear labels only (cheap labels always train), refitting
    hyperparameters in each fold. Metrics are ``None`` below 3 dear labels or when
    ``validate`` is false.
    """
    mf = data.cheap_index.size > 0 or config.acquisition.rule == "cost_aware"
    X = data.X
    if mf:
        mu_d = float(data.dear_y.mean()) if data.dear_y.size else 0.0
        mu_c = float(data.cheap_y.mean()) if data.cheap_y.size else 0.0
        rows = np.vstack(
            [
                multi_fidelity_rows(X[data.dear_index], "dear", "cheap"),
                multi_fidelity_rows(X[data.cheap_index], "cheap", "cheap"),
            ]
        )
        y = np.concatenate([data.dear_y - mu_d, data.cheap_y - mu_c])
        kind = np.r_[np.full(data.dear_y.size, ENERGY), np.full(data.cheap_y.size, FORCE)]
        offsets = (mu_d, mu_c)
    else:
        rows, y, kind, offsets = X[data.dear_index], data.dear_y, None, (0.0, 0.0)
    model = _new_surrogate(config, center=not mf).fit(rows, y, kind)
    fitted = FittedModel(model, mf, offsets)
    metrics: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    if validate and data.dear_y.size >= 3:
        groups = np.r_[np.arange(data.dear_y.size), -np.ones(data.cheap_y.size, dtype=int)]
        cv = cross_validate(
            lambda: _new_surrogate(config, center=not mf),
            rows,
            y,
            config.stopping.cv_folds,
            rng,
            kind,
            groups,
        )
        metrics = validation_metrics(y, cv, kind)
        dear = cv.subset(np.arange(data.dear_y.size))
        dear.mean = dear.mean + (offsets[0] if mf else 0.0)
        fitted.cv = dear
        fitted.calibration, honest = assess_accuracy(config, data, fitted, rng)
        metrics.update(honest)
    return fitted, metrics


def assess_accuracy(
    config: CampaignConfig, data: TrainingData, fitted: FittedModel, rng: np.random.Generator
) -> tuple[VarianceCalibration, dict]:
    """Recalibrate ``fitted`` on its out-of-fold predictions and estimate the pool error
    (:func:`alcampaign.science.validation.assess`)."""
    st = config.stopping
    raw = fitted.predict(data.X, calibrated=False)
    unlabelled = np.ones(len(data.X), dtype=bool)
    unlabelled[data.dear_index] = False
    audit = None
    if data.audit_index.size:
        audit = data.audit_y - raw.mean[data.audit_index]
    held = HeldOut(
        y=data.dear_y,
        cv_mean=fitted.cv.mean,
        cv_std=fitted.cv.std,
        fit_mean=raw.mean[data.dear_index],
        unlabelled_std=raw.std[unlabelled],
        weights=density_ratio(data.X, data.dear_index) if st.accuracy_estimate == "iwcv" else None,
        audit_residuals=audit,
    )
    return assess(
        held,
        st.accuracy_estimate,
        st.accuracy_level,
        rng,
        st.max_std_residual_alpha or 0.05,
        st.cv_folds,
    )


def assess_domain(config: CampaignConfig, X: np.ndarray, train: np.ndarray) -> dict:
    """Mahalanobis distance, leverage and flags of every candidate."""
    d = config.domain
    domain = ApplicabilityDomain(d.mahalanobis_threshold, d.leverage_threshold, d.quantile)
    domain.fit(X[train])
    out = domain.assess(X)
    out["limits"] = {"mahalanobis": domain.mahalanobis_limit_, "leverage": domain.leverage_limit_}
    return out


def diversity(config: CampaignConfig, X: np.ndarray, train: np.ndarray) -> dict:
    """Coverage of the pool and diversity of the training set."""
    return coverage_metrics(X, X[train], radius=config.acquisition.coverage_radius)


@dataclass
class Request:
    """One question for an oracle: a candidate row, its fidelity, its score."""

    index: int
    cheap: bool
    score: float


def select(
    config: CampaignConfig,
    fitted: FittedModel | None,
    X: np.ndarray,
    dear_available: np.ndarray,
    cheap_available: np.ndarray,
    k: int,
    rng: np.random.Generator,
    compositions: np.ndarray | None = None,
) -> tuple[str, list[Request]]:
    """Choose the next questions with the configured rule.

    Without a fitted model (no successful label yet) the choice is random.

    Returns
    -------
    rule_name, requests
    """
    if k <= 0:
        return config.acquisition.rule, []
    rule_name = config.acquisition.rule if fitted is not None else "random"
    a = config.acquisition
    rule = make_rule(
        rule_name, **({"kappa": a.kappa} if rule_name == "lower_confidence_bound" else {})
    )
    if rule_name == "cost_aware":
        pool_index = np.flatnonzero(dear_available | cheap_available)
        Xp = X[pool_index]
        pool = Pool(
            fitted.predict(Xp),
            fidelity_rows={
                "dear": (
                    fitted.rows(Xp),
                    fitted.noise_variance(ENERGY),
                    config.oracle.cost,
                    dear_available[pool_index],
                ),
                "cheap": (
                    fitted.rows(Xp, cheap=True),
                    fitted.noise_variance(FORCE),
                    config.oracle.cheap.cost,
                    cheap_available[pool_index],
                ),
            },
            joint_covariance=fitted.covariance(),
        )
        sel = rule.select(pool, k, rng)
        return rule.name, [
            Request(int(pool_index[i]), f == "cheap", float(s))
            for i, s, f in zip(sel.indices, sel.scores, sel.fidelities, strict=True)
        ]
    pool_index = np.flatnonzero(dear_available)
    Xp = X[pool_index]
    if fitted is None:
        n = len(pool_index)
        pool = Pool(Prediction(np.zeros(n), np.ones(n), np.ones(n)))
    else:
        pred = fitted.predict(Xp)
        pool = Pool(
            pred,
            X=fitted.rows(Xp),
            covariance=fitted.covariance(),
            noise_var=float(np.mean(pred.aleatoric_var)),
            compositions=None if compositions is None else compositions[pool_index],
        )
    sel: Selection = rule.select(pool, k, rng)
    return rule.name, [
        Request(int(pool_index[i]), False, float(s))
        for i, s in zip(sel.indices, sel.scores, strict=True)
    ]
