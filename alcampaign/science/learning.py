"""One controller iteration's science, on arrays: fit, validate, assess, judge, select.

:func:`decide` is the pure middle of the controller (``alcampaign.campaign.controller``
reads the stores into arrays, calls it, and writes the documents it implies), as a
maggma builder keeps I/O out of ``process_item``. Nothing here touches a database, a
workflow or the campaign config: settings arrive as a :class:`LearningSettings`, so
every step is testable in milliseconds and reusable by the benchmarks.

Single fidelity: energy rows ``x`` with targets ``E`` (energy per atom).

Two linked fidelities (``cost_aware``): the dear oracle is the cheap fidelity plus a
learned correction, ``E_dear = w_c . x + w_d . x`` and ``E_cheap = w_c . x``, with
separate noise for each; each fidelity's targets are centred on their own mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alcampaign.science.acquisition import (
    Pool,
    Selection,
    coverage_metrics,
    make_rule,
    multi_fidelity_rows,
)
from alcampaign.science.bce import BayesianClusterExpansion
from alcampaign.science.calibration import Calibration, VarianceCalibration
from alcampaign.science.domain import ApplicabilityDomain
from alcampaign.science.hull import (
    GroundStateEstimate,
    end_member_indices,
    estimate_ground_states,
)
from alcampaign.science.priors import ColumnInfo
from alcampaign.science.stopping import (
    METRIC_NAMES,
    StoppingThresholds,
    cross_validate,
    judge,
    judge_missing_ground_states,
    validation_metrics,
)
from alcampaign.science.stopping import Decision as Verdict
from alcampaign.science.surrogate import ENERGY, FORCE, Prediction, Surrogate, make_surrogate
from alcampaign.science.validation import (
    HeldOut,
    assess,
    density_ratio,
    epistemic_eigenvalues,
)


@dataclass(frozen=True)
class LearningSettings:
    """The plain settings one controller step needs (no config object, no I/O).

    Built from a campaign config by
    :func:`alcampaign.campaign.controller.learning_settings`; benchmarks and tests
    build it directly.

    Attributes
    ----------
    thresholds
        The stopping portfolio (its ``max_oracle_calls`` is also the budget that caps
        a batch).
    seed
        Seed of the campaign; iteration ``k`` draws from ``default_rng([seed, k])``.
    surrogate, alpha, beta, n_members
        Surrogate kind (``bayesian_linear`` or ``ensemble``), prior and noise
        precisions (``None``: maximised evidence) and committee size.
    rule, batch_size, kappa, coverage_radius
        Acquisition rule, dear-oracle calls per iteration, the LCB's ``kappa``, and the
        radius of the coverage metric (``None``: its default).
    prior, basis, cheap_energy
        The Bayesian cluster expansion's prior (``hierarchical``, ``isotropic``,
        ``auto``), sub-basis choice (``evidence`` or ``fixed``) and delta term (``auto``,
        ``on``, ``off``); ``isotropic`` + ``fixed`` + ``off`` is the classic model.
    mahalanobis_threshold, leverage_threshold, domain_quantile, domain_ridge
        Domain-of-applicability limits (``None``: the quantile default) and the ridge
        of its covariance and Gram matrix.
    cv_folds
        Folds of the cross-validation.
    accuracy_estimate, accuracy_level
        The pool-wide error estimate behind ``rmse``/``mae`` (one of
        :data:`alcampaign.science.validation.ESTIMATES`) and its interval's coverage.
    calibration, calibration_weighting
        The recalibration of the predictive fitted on the cross-validated residuals
        (a key of :data:`alcampaign.science.calibration.CALIBRATIONS`), and whether
        those residuals are weighted by the pool/labelled density ratio
        (``importance``) or not (``none``) there and in the posterior estimate.
    dear_cost, cheap_cost
        Cost of one call at each fidelity; ``cheap_cost`` ``None`` means a
        single-fidelity campaign.
    n_samples
        Joint posterior samples of the convex hull (``ground_state``).
    missing_ground_states
        Stop when the expected number of unlabelled hull ground states is below this
        (``None``: off); hulls are sampled when this is set or the rule is
        ``ground_state``.
    hull_tolerance
        eV/atom: a sampled hull's unlabelled vertex counts as a missing ground state
        only when it lies more than this below the labelled hull
        (:func:`~alcampaign.science.hull.estimate_ground_states`).
    min_labels
        The missing-ground-states criterion counts from this many oracle calls.
    """

    thresholds: StoppingThresholds
    seed: int = 0
    surrogate: str = "bayesian_linear"
    alpha: float | None = None
    beta: float | None = None
    n_members: int = 8
    prior: str = "isotropic"
    basis: str = "fixed"
    cheap_energy: str = "off"
    rule: str = "max_variance"
    batch_size: int = 5
    kappa: float = 2.0
    coverage_radius: float | None = None
    mahalanobis_threshold: float | None = None
    leverage_threshold: float | None = None
    domain_quantile: float = 0.99
    domain_ridge: float = 0.0
    cv_folds: int = 5
    accuracy_estimate: str = "posterior"
    accuracy_level: float = 0.9
    calibration: str = "variance"
    calibration_weighting: str = "importance"
    dear_cost: float = 1.0
    cheap_cost: float | None = None
    n_samples: int = 1000
    missing_ground_states: float | None = None
    hull_tolerance: float = 0.0
    min_labels: int = 0

    @property
    def classic(self) -> bool:
        """The plain Bayesian linear model (isotropic prior, every column, no delta)."""
        return self.prior == "isotropic" and self.basis == "fixed" and self.cheap_energy == "off"

    @property
    def uses_cheap_energy(self) -> bool:
        """Whether the rows get the cheap energy as a delta-learning column."""
        return self.cheap_energy != "off" and not self.classic and self.rule != "cost_aware"

    @property
    def multi_fidelity(self) -> bool:
        """Whether a cheap fidelity exists."""
        return self.cheap_cost is not None

    @property
    def samples_hulls(self) -> bool:
        """Whether a step samples convex hulls (ground-state search or its stopping)."""
        return self.rule == "ground_state" or self.missing_ground_states is not None


def initial_design(
    n_initial: int,
    n_candidates: int,
    rng: np.random.Generator,
    compositions: np.ndarray | None = None,
    cheap_energies: np.ndarray | None = None,
    end_members: bool = True,
) -> tuple[list[int], int]:
    """The first questions: the end members (when asked for), then random candidates.

    ``n_initial`` in all; with ``end_members`` and compositions known, one candidate at
    each corner of the composition space comes first (the lowest ``cheap_energies``
    among several, e.g. the CHGNet prescreen): every hull needs them.

    Returns
    -------
    indices, n_end_members
        The chosen candidates, the end members first, and how many end members.
    """
    n = min(n_initial, n_candidates)
    chosen: list[int] = []
    if end_members and compositions is not None:
        chosen = end_member_indices(compositions, cheap_energies).tolist()[:n]
    n_end = len(chosen)
    rest = np.setdiff1d(np.arange(n_candidates), chosen)
    chosen += rng.choice(rest, size=n - n_end, replace=False).tolist()
    return [int(i) for i in chosen], n_end


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


def design_matrix(
    settings: LearningSettings,
    kind: str,
    raw: np.ndarray,
    cheap: np.ndarray | None = None,
    featurizer: dict | None = None,
) -> tuple[np.ndarray, ColumnInfo]:
    """Surrogate rows of every candidate and what each column is.

    ``raw`` as :func:`design_features` (of feature ``kind``); ``cheap``: the prescreen
    energy per atom of each candidate, appended centred on its pool mean when the
    settings use it; ``featurizer``: the enumeration's featurizer description, whose
    cluster ``order`` and ``diameter`` lists feed the hierarchical prior (without them
    every column gets one prior level).
    """
    X = design_features(kind, raw)
    meta = featurizer or {}
    if kind == "cluster_vector" and len(meta.get("order") or []) == X.shape[1]:
        info = ColumnInfo.clusters(meta["order"], meta["diameter"])
    else:
        info = ColumnInfo.generic(X.shape[1])
    if cheap is not None and settings.uses_cheap_energy:
        X = np.column_stack([X, centred_cheap_energy(cheap)])
        info = ColumnInfo(np.r_[info.order, -1], np.r_[info.diameter, 0.0], np.r_[info.cheap, True])
    return X, info


def centred_cheap_energy(cheap: np.ndarray) -> np.ndarray:
    """The delta-learning column: cheap energies minus their pool mean (missing: 0)."""
    c = np.asarray(cheap, dtype=float).reshape(-1)
    if not np.isfinite(c).any():
        return np.zeros_like(c)
    return np.nan_to_num(c - np.nanmean(c))


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
    columns: ColumnInfo | None = None  # what each column of X is (design_matrix)


    audit_index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    audit_y: np.ndarray = field(default_factory=lambda: np.empty(0))


@dataclass
class FittedModel:
    """A surrogate with what is needed to predict the dear oracle's energies."""

    model: Surrogate
    multi_fidelity: bool
    offsets: tuple[float, float] = (0.0, 0.0)  # (dear, cheap) target means (multi-fidelity)
    cv: Prediction | None = None  # out-of-fold predictions of the dear labels (eV/atom), raw
    calibration: Calibration = field(default_factory=VarianceCalibration)

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


def _new_surrogate(
    settings: LearningSettings, center: bool, columns: ColumnInfo | None = None
) -> Surrogate:
    """The surrogate of the settings; ``columns`` describe its rows (cluster metadata)."""
    if settings.classic:
        kwargs = {"alpha": settings.alpha, "beta": settings.beta, "center": center}
        if settings.surrogate == "ensemble":
            kwargs.update(n_members=settings.n_members, seed=settings.seed)
        return make_surrogate(settings.surrogate, **kwargs)

    def base() -> BayesianClusterExpansion:
        return BayesianClusterExpansion(
            beta=settings.beta,
            center=center,
            columns=columns,
            prior=settings.prior,
            select_basis=settings.basis == "evidence",
            cheap=settings.cheap_energy,
        )

    if settings.surrogate == "ensemble":
        return make_surrogate(
            "ensemble", n_members=settings.n_members, seed=settings.seed, base=base
        )
    return base()


def _validation_factory(settings, model, center, columns):
    """A fresh model per cross-validation fold: the cluster expansion keeps the
    evidence's choice of basis, prior and delta term and re-maximises their
    hyperparameters (one optimisation a fold, not the whole scan)."""
    if isinstance(model, BayesianClusterExpansion):
        return model.for_validation
    return lambda: _new_surrogate(settings, center, columns)


def fit_and_validate(
    settings: LearningSettings, data: TrainingData, rng: np.random.Generator, validate: bool = True
) -> tuple[FittedModel, dict[str, float | None]]:
    """Fit the surrogate of the settings on every label and cross-validate it.

    Cross-validation holds out dear labels only (cheap labels always train), refitting
    hyperparameters in each fold (a cluster expansion keeps the evidence's choice of
    basis, prior and delta term made on every label:
    ``BayesianClusterExpansion.for_validation``). Metrics are ``None`` below 3 dear
    labels or when ``validate`` is false.
    """
    mf = data.cheap_index.size > 0 or settings.rule == "cost_aware"
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
    columns = data.columns
    if mf and columns is not None:  # joint rows: the shared part, then the correction
        columns = ColumnInfo(
            np.tile(columns.order, 2), np.tile(columns.diameter, 2), np.tile(columns.cheap, 2)
        )
    model = _new_surrogate(settings, center=not mf, columns=columns).fit(rows, y, kind)
    fitted = FittedModel(model, mf, offsets)
    metrics: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    if validate and data.dear_y.size >= 3:
        groups = np.r_[np.arange(data.dear_y.size), -np.ones(data.cheap_y.size, dtype=int)]
        cv = cross_validate(
            _validation_factory(settings, model, not mf, columns),
            rows,
            y,
            settings.cv_folds,
            rng,
            kind,
            groups,
        )
        metrics = validation_metrics(y, cv, kind)
        dear = cv.subset(np.arange(data.dear_y.size))
        dear.mean = dear.mean + (offsets[0] if mf else 0.0)
        fitted.cv = dear
        fitted.calibration, honest = assess_accuracy(settings, data, fitted, rng)
        metrics.update(honest)
    return fitted, metrics


def unlabelled_eigenvalues(fitted: FittedModel, data: TrainingData) -> np.ndarray:
    """:func:`~alcampaign.science.validation.epistemic_eigenvalues` of the candidates
    without a dear label; their Gram matrix is the pool's minus the labelled rows', so
    the pool's rows are not copied (the controller reads up to 1e5 of them)."""
    rows, labelled = fitted.rows(data.X), fitted.rows(data.X[data.dear_index])
    return epistemic_eigenvalues(rows.T @ rows - labelled.T @ labelled, fitted.model.covariance_)


def assess_accuracy(
    settings: LearningSettings,
    data: TrainingData,
    fitted: FittedModel,
    rng: np.random.Generator,
) -> tuple[Calibration, dict]:
    """Recalibrate ``fitted`` on its out-of-fold predictions and estimate the pool error
    (:func:`alcampaign.science.validation.assess`)."""
    raw = fitted.predict(data.X, calibrated=False)
    unlabelled = np.ones(len(data.X), dtype=bool)
    unlabelled[data.dear_index] = False
    audit = None
    if data.audit_index.size:
        audit = data.audit_y - raw.mean[data.audit_index]
    iw = settings.accuracy_estimate == "iwcv" or settings.calibration_weighting == "importance"
    held = HeldOut(
        y=data.dear_y,
        cv_mean=fitted.cv.mean,
        cv_std=fitted.cv.std,
        fit_mean=raw.mean[data.dear_index],
        unlabelled_std=raw.std[unlabelled],
        weights=density_ratio(data.X, data.dear_index) if iw else None,
        audit_residuals=audit,
        unlabelled_eigenvalues=unlabelled_eigenvalues(fitted, data)
        if settings.accuracy_estimate == "posterior" and unlabelled.any()
        else None,
    )
    return assess(
        held,
        settings.accuracy_estimate,
        settings.accuracy_level,
        rng,
        settings.thresholds.max_std_residual_alpha or 0.05,
        settings.cv_folds,
        settings.calibration,
        settings.calibration_weighting == "importance",
    )


def assess_domain(settings: LearningSettings, X: np.ndarray, train: np.ndarray) -> dict:
    """Mahalanobis distance, leverage and flags of every candidate."""
    domain = ApplicabilityDomain(
        settings.mahalanobis_threshold,
        settings.leverage_threshold,
        settings.domain_quantile,
        ridge=settings.domain_ridge,
    )
    domain.fit(X[train])
    out = domain.assess(X)
    out["limits"] = {"mahalanobis": domain.mahalanobis_limit_, "leverage": domain.leverage_limit_}
    return out


def diversity(settings: LearningSettings, X: np.ndarray, train: np.ndarray) -> dict:
    """Coverage of the pool and diversity of the training set."""
    return coverage_metrics(X, X[train], radius=settings.coverage_radius)


def ground_states(
    settings: LearningSettings,
    fitted: FittedModel,
    X: np.ndarray,
    labels: np.ndarray,
    compositions: np.ndarray,
    members: np.ndarray,
    rng: np.random.Generator,
    report_tolerances: tuple[float, ...] = (),
) -> GroundStateEstimate:
    """Sampled hulls over the candidates ``members`` (labelled ones at their labels).

    Parameters
    ----------
    labels
        ``(N,)`` dear labels, ``nan`` where unlabelled.
    members
        Indices of the candidates that enter the hulls (labelled or still askable:
        failed ones can never be labelled, so they are left out).
    report_tolerances
        Further hull tolerances (eV/atom) at which to count the expected missing
        ground states too (:attr:`GroundStateEstimate.missing_at`).

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
        settings.n_samples,
        rng,
        fitted.model.noise_variance(),
        tolerance=settings.hull_tolerance,
        report_tolerances=report_tolerances,
    )


@dataclass
class Request:
    """One question for an oracle: a candidate row, its fidelity, its score."""

    index: int
    cheap: bool
    score: float


def select(
    settings: LearningSettings,
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
    """Choose the next questions with the rule of the settings.

    Without a fitted model (no successful label yet) the choice is random.
    ``ground_state`` also needs ``labels`` (``(N,)``, ``nan`` where unlabelled) and may
    reuse ``hull``: (members, estimate) from :func:`ground_states`.

    Returns
    -------
    rule_name, requests
    """
    if k <= 0:
        return settings.rule, []
    rule_name = settings.rule if fitted is not None else "random"
    options = {
        "lower_confidence_bound": {"kappa": settings.kappa},
        "ground_state": {"n_samples": settings.n_samples},
    }
    rule = make_rule(rule_name, **options.get(rule_name, {}))
    if rule_name == "ground_state":
        return rule.name, _select_ground_states(
            rule, fitted, X, dear_available, k, rng, compositions, labels, hull
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
                    settings.dear_cost,
                    dear_available[pool_index],
                ),
                "cheap": (
                    fitted.rows(Xp, cheap=True),
                    fitted.noise_variance(FORCE),
                    settings.cheap_cost,
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
        if rule_name == "mutual_information" and settings.surrogate == "ensemble":
            # The information of a label about the weights needs their full-rank
            # covariance, not the committee spread (see BootstrapEnsemble.covariance_).
            rows = fitted.rows(Xp)
            pred.epistemic_var = ((rows @ fitted.model.covariance_) * rows).sum(axis=1)
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


@dataclass
class StepInputs:
    """What one controller step knows, as arrays (read from the stores by the caller).

    Attributes
    ----------
    data
        Features of every candidate (``X``, ``(N, d)``, rows as the surrogate takes
        them) and the successful labels of each fidelity as rows of ``X``.
    iteration
        The iteration being decided (seeds its random draws).
    n_oracle_calls
        Dear-oracle calls so far, successful or failed.
    cost_spent
        Cost of every label at every fidelity.
    rmse_history
        Cross-validated RMSE of each earlier iteration (``None`` where not measured).
    dear_taken, cheap_taken
        ``(N,)`` booleans: the candidate was asked or answered at that fidelity.
    n_outstanding
        External questions asked and not yet answered (they count against the batch
        and the budget).
    compositions
        ``(N, n_elements)`` fractions, needed by ``lower_confidence_bound``,
        ``ground_state`` and the missing-ground-states criterion.
    """

    data: TrainingData
    iteration: int
    n_oracle_calls: int
    cost_spent: float = 0.0
    rmse_history: list[float | None] = field(default_factory=list)
    dear_taken: np.ndarray | None = None
    cheap_taken: np.ndarray | None = None
    n_outstanding: int = 0
    compositions: np.ndarray | None = None


@dataclass
class Decision:
    """The outcome of one controller step (what :func:`decide` returns).

    Attributes
    ----------
    verdict
        The stopping portfolio's judgement: ``stop``, ``failed``, ``reason`` and every
        criterion (a stop for an exhausted pool is recorded here too).
    metrics
        Cross-validated metrics (``None`` where not measured).
    fitted
        The surrogate fitted on every label, ``None`` before the first success.
    domain
        :func:`assess_domain`'s output over every candidate (``None`` without a model).
    diversity
        :func:`diversity` of the training set (``None`` without a model).
    rule
        The acquisition rule that chose ``requests`` (``None`` when stopping).
    requests
        The next questions, as rows of ``X``.
    hull
        ``(members, estimate)``: the sampled hulls over the candidates ``members``
        (labelled or askable), when the settings sample hulls and a model exists.
    """

    verdict: Verdict
    metrics: dict[str, float | None]
    fitted: FittedModel | None = None
    domain: dict | None = None
    diversity: dict | None = None
    rule: str | None = None
    requests: list[Request] = field(default_factory=list)
    hull: tuple[np.ndarray, GroundStateEstimate] | None = None

    @property
    def stop(self) -> bool:
        """Whether the campaign stops (or fails) here."""
        return self.verdict.stop

    @property
    def flagged(self) -> np.ndarray:
        """Rows outside the domain of applicability (empty without a model)."""
        if self.domain is None:
            return np.empty(0, dtype=int)
        return np.flatnonzero(self.domain["flagged"])


def decide(settings: LearningSettings, inputs: StepInputs) -> Decision:
    """One controller step on arrays: fit, validate, domain, diversity, judge, select.

    The random draws (cross-validation folds, then the acquisition) come from
    ``default_rng([settings.seed, inputs.iteration])`` in that order, so a step is
    reproducible from its inputs.

    Parameters
    ----------
    settings
        The campaign's learning settings.
    inputs
        The labels and the state of the campaign at this iteration.

    Returns
    -------
    Decision
        Stop (with the reason) or go on with ``requests``; the fitted model, metrics,
        domain and diversity either way.

    Examples
    --------
    >>> import numpy as np
    >>> from alcampaign.science.stopping import StoppingThresholds
    >>> X = np.column_stack([np.ones(12), np.linspace(0.0, 1.0, 12)])
    >>> data = TrainingData(X, np.arange(4), 0.1 * X[:4, 1])
    >>> settings = LearningSettings(StoppingThresholds(max_oracle_calls=6), batch_size=2)
    >>> step = decide(settings, StepInputs(data, iteration=1, n_oracle_calls=4))
    >>> step.stop, len(step.requests), all(r.index >= 4 for r in step.requests)
    (False, 2, True)
    """
    data = inputs.data
    X = data.X
    rng = np.random.default_rng([settings.seed, inputs.iteration])
    metrics: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    out = Decision(verdict=Verdict(False, None, []), metrics=metrics)
    if data.dear_index.size:
        out.fitted, out.metrics = fit_and_validate(settings, data, rng)
        out.domain = assess_domain(settings, X, data.dear_index)
        out.diversity = diversity(settings, X, data.dear_index)
    n_calls = inputs.n_oracle_calls
    out.verdict = judge(
        settings.thresholds,
        n_calls,
        out.metrics,
        cost_spent=inputs.cost_spent,
        n_failed=n_calls - int(data.dear_index.size) - int(data.audit_index.size),
        rmse_history=[*inputs.rmse_history, out.metrics["rmse"]],
    )
    n = len(X)
    dear_ok = np.ones(n, bool) if inputs.dear_taken is None else ~inputs.dear_taken
    dear_ok[data.audit_index] = False  # no rule ever acquires an audit candidate
    labels = np.full(n, np.nan)
    labels[data.dear_index] = data.dear_y
    if settings.samples_hulls and out.fitted is not None and not out.fitted.multi_fidelity:
        if inputs.compositions is None:
            raise ValueError("sampling convex hulls needs the candidates' compositions")
        members = np.flatnonzero(dear_ok | np.isfinite(labels))
        estimate = ground_states(settings, out.fitted, X, labels, inputs.compositions,
                                 members, rng)
        out.hull = (members, estimate)
        out.metrics["missing_ground_states"] = estimate.expected_missing
    if settings.missing_ground_states is not None:
        judge_missing_ground_states(
            out.verdict,
            out.metrics.get("missing_ground_states"),
            settings.missing_ground_states,
            n_calls,
            settings.min_labels,
        )
    if out.verdict.stop:
        return out
    cheap_ok = np.full(n, settings.multi_fidelity)
    if inputs.cheap_taken is not None:
        cheap_ok &= ~inputs.cheap_taken
    if not (dear_ok.any() or cheap_ok.any()):
        out.verdict.stop, out.verdict.reason = True, "candidate pool exhausted"
        return out
    # Outstanding external questions count against the batch and the budget.
    k = min(
        settings.batch_size - inputs.n_outstanding,
        settings.thresholds.max_oracle_calls - n_calls - inputs.n_outstanding,
    )
    out.rule, out.requests = select(
        settings, out.fitted, X, dear_ok, cheap_ok, k, rng, inputs.compositions, labels,
        out.hull,
    )
    return out


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
