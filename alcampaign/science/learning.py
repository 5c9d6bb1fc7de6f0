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
from alcampaign.science.domain import ApplicabilityDomain
from alcampaign.science.hull import (
    GroundStateEstimate,
    end_member_indices,
    estimate_ground_states,
)
from alcampaign.science.stopping import METRIC_NAMES, cross_validate, validation_metrics
from alcampaign.science.surrogate import ENERGY, FORCE, Prediction, Surrogate, make_surrogate


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


def initial_design(
    config: CampaignConfig,
    n_candidates: int,
    rng: np.random.Generator,
    compositions: np.ndarray | None = None,
    cheap_energies: np.ndarray | None = None,
) -> tuple[list[int], int]:
    """The first questions: the end members (when asked for), then random candidates.

    ``initial_design.n_initial`` in all; with ``initial_design.end_members`` and
    compositions known, one candidate at each corner of the composition space comes
    first (the lowest ``cheap_energies`` among several, e.g. the CHGNet prescreen).

    Returns
    -------
    indices, n_end_members
        The chosen candidates, the end members first, and how many end members.
    """
    n = min(config.initial_design.n_initial, n_candidates)
    chosen: list[int] = []
    if config.initial_design.end_members and compositions is not None:
        chosen = end_member_indices(compositions, cheap_energies).tolist()[:n]
    n_end = len(chosen)
    rest = np.setdiff1d(np.arange(n_candidates), chosen)
    chosen += rng.choice(rest, size=n - n_end, replace=False).tolist()
    return [int(i) for i in chosen], n_end


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
    """

    X: np.ndarray
    dear_index: np.ndarray
    dear_y: np.ndarray
    cheap_index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    cheap_y: np.ndarray = field(default_factory=lambda: np.empty(0))


@dataclass
class FittedModel:
    """A surrogate with what is needed to predict the dear oracle's energies."""

    model: Surrogate
    multi_fidelity: bool
    offsets: tuple[float, float] = (0.0, 0.0)  # (dear, cheap) target means (multi-fidelity)
    cv: Prediction | None = None  # out-of-fold predictions of the dear labels (eV/atom)

    def rows(self, X: np.ndarray, cheap: bool = False) -> np.ndarray:
        """Model rows of candidates at the dear (or cheap) fidelity."""
        if not self.multi_fidelity:
            return X
        return np.hstack([X, np.zeros_like(X) if cheap else X])

    def predict(self, X: np.ndarray) -> Prediction:
        """Dear-oracle energy per atom at candidates ``X``."""
        p = self.model.predict(self.rows(X), kind=ENERGY)
        if self.multi_fidelity:
            p.mean = p.mean + self.offsets[0]
        return p


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
    return fitted, metrics


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


def ground_states(
    config: CampaignConfig,
    fitted: FittedModel,
    X: np.ndarray,
    labels: np.ndarray,
    compositions: np.ndarray,
    members: np.ndarray,
    rng: np.random.Generator,
) -> GroundStateEstimate:
    """Sampled hulls over the candidates ``members`` (labelled ones at their labels).

    Parameters
    ----------
    labels
        ``(N,)`` dear labels, ``nan`` where unlabelled.
    members
        Indices of the candidates that enter the hulls (labelled or still askable:
        failed ones can never be labelled, so they are left out).

    Returns
    -------
    GroundStateEstimate
        Over ``members``, in their order.
    """
    Xm = X[members]
    return estimate_ground_states(
        fitted.predict(Xm).mean,
        fitted.rows(Xm),
        fitted.model.covariance_,
        compositions[members],
        labels[members],
        config.acquisition.n_samples,
        rng,
        fitted.model.noise_variance(),
    )


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
    labels: np.ndarray | None = None,
    hull: tuple[np.ndarray, GroundStateEstimate] | None = None,
) -> tuple[str, list[Request]]:
    """Choose the next questions with the configured rule.

    Without a fitted model (no successful label yet) the choice is random.
    ``ground_state`` also needs ``labels`` (``(N,)``, ``nan`` where unlabelled) and may
    reuse ``hull``: (members, estimate) from :func:`ground_states`.

    Returns
    -------
    rule_name, requests
    """
    if k <= 0:
        return config.acquisition.rule, []
    rule_name = config.acquisition.rule if fitted is not None else "random"
    a = config.acquisition
    options = {
        "lower_confidence_bound": {"kappa": a.kappa},
        "ground_state": {"n_samples": a.n_samples},
    }
    rule = make_rule(rule_name, **options.get(rule_name, {}))
    if rule_name == "ground_state":
        return rule.name, _select_ground_states(
            rule, fitted, X, dear_available, k, rng, compositions, labels, hull
        )
    if rule_name == "cost_aware":
        pool_index = np.flatnonzero(dear_available | cheap_available)
        Xp = X[pool_index]
        model = fitted.model
        pool = Pool(
            fitted.predict(Xp),
            fidelity_rows={
                "dear": (
                    fitted.rows(Xp),
                    model.noise_variance(ENERGY),
                    config.oracle.cost,
                    dear_available[pool_index],
                ),
                "cheap": (
                    fitted.rows(Xp, cheap=True),
                    model.noise_variance(FORCE),
                    config.oracle.cheap.cost,
                    cheap_available[pool_index],
                ),
            },
            joint_covariance=model.covariance_,
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
            covariance=fitted.model.covariance_,
            noise_var=float(np.mean(pred.aleatoric_var)),
            compositions=None if compositions is None else compositions[pool_index],
        )
    sel: Selection = rule.select(pool, k, rng)
    return rule.name, [
        Request(int(pool_index[i]), False, float(s))
        for i, s in zip(sel.indices, sel.scores, strict=True)
    ]


def _select_ground_states(
    rule,
    fitted: FittedModel,
    X: np.ndarray,
    available: np.ndarray,
    k: int,
    rng: np.random.Generator,
    compositions: np.ndarray | None,
    labels: np.ndarray | None,
    hull: tuple[np.ndarray, GroundStateEstimate] | None,
) -> list[Request]:
    """The ``ground_state`` rule over labelled and askable candidates together."""
    if compositions is None:
        raise ValueError("ground_state needs the candidates' compositions")
    labels = np.full(X.shape[0], np.nan) if labels is None else labels
    if hull is None:
        members, estimate = np.flatnonzero(available | np.isfinite(labels)), None
    else:
        members, estimate = hull
    Xm = X[members]
    pred = fitted.predict(Xm)
    pool = Pool(
        pred,
        X=fitted.rows(Xm),
        covariance=fitted.model.covariance_,
        noise_var=float(np.mean(pred.aleatoric_var)),
        compositions=compositions[members],
        labels=labels[members],
        selectable=available[members],
        ground_states=estimate,
    )
    sel = rule.select(pool, k, rng)
    return [
        Request(int(members[i]), False, float(s))
        for i, s in zip(sel.indices, sel.scores, strict=True)
    ]
