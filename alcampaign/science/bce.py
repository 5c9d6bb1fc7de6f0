"""Bayesian cluster expansion: physical priors, hyperpriors, and a model average by evidence.

The model is the Bayesian linear model of :mod:`alcampaign.science.surrogate` with a
prior of one precision per column, ``w_j ~ N(0, 1/alpha_j)``, ``log alpha = T theta``
(:func:`alcampaign.science.priors.prior_design`): precisions grow with the cluster's
order and diameter (Mueller & Ceder, PRB 80, 024103, 2009). The evidence (marginal
likelihood, MacKay, Neural Computation 4, 415, 1992; Bishop, PRML, sec. 3.5) and its
analytic gradient::

    log p(y) = 1/2 sum_j log alpha_j + 1/2 sum_g n_g log beta_g - 1/2 log|A|
               - 1/2 (sum_g beta_g |y_g - X_g m|^2 + sum_j alpha_j m_j^2) - n/2 log 2 pi
    d log p / d log alpha_j = 1/2 (1 - alpha_j (Sigma_jj + m_j^2))
    d log p / d log beta_g  = 1/2 (n_g - beta_g (|y_g - X_g m|^2 + tr(X_g^T X_g Sigma)))

with ``A = diag(alpha) + sum_g beta_g X_g^T X_g``, ``Sigma = A^-1``, ``m = Sigma sum_g
beta_g X_g^T y_g``.

**MAP-II** (``hyperprior=True``, the default): the hyperparameters maximise the evidence
times a weakly informative hyperprior, ``log p(y | theta, beta) + log p(theta, beta)``
(MacKay 1992, sec. 5, and Tipping, JMLR 1, 211, 2001, put Gamma hyperpriors on the
precisions; here log-normal ones on the log precisions). Plain evidence maximisation
(ML-II) with few labels drives the noise precision to its bound (the model interpolates
30 labels with 75 clusters, noise 0.1 meV/atom, and its error at 10 labels on Ni-Pt was
1.5x the spread of the energies) or switches whole orders off. The hyperpriors are set
on the scale of the data (``v``: the variance of the centred energy labels)::

    log beta_E      ~ N(-log(f^2 v), s_beta^2)         noise sd about f = 10 % of the spread
    theta_level     ~ N(log(sum_j <x_j^2> / v), s_alpha^2)  (every order's level)
    diameter slopes ~ U(SLOPE_BOUNDS)

so that a priori the clusters of a basis together explain the spread of the energies
(``<x_j^2>``: mean square of column ``j`` over the labelled rows) and the noise is a
tenth of it; ``s_alpha = 3`` and ``s_beta = 1.5`` (natural log) leave the data in charge
once there are tens of labels. (The labels' own spread sets the scale: the CHGNet
energies of the pool, available without labels, spread 10-20x more than the EMT ones on
three of the four tuning pools.) ``hyperprior=False`` is ML-II within the bounds (a
uniform hyperprior on the bounded log precisions).

**Model average** (``average=True``, the default): the alternatives judged are

* the **basis**: the nested sub-bases of the offered cutoffs
  (:func:`alcampaign.science.priors.nested_bases`), so a user offers the largest cutoffs
  they can afford and the model does the rest;
* the **prior** (``prior="auto"``: hierarchical or isotropic);
* the **delta term**: columns flagged ``cheap`` hold a cheap fidelity's energy (e.g. the
  CHGNet prescreen energy per atom, centred), an extra feature with its own weight
  ``w_c ~ N(0, 1/alpha_c)`` at a *fixed* ``alpha_c`` (``cheap_precision``; 1: a weight of
  order one, the cheap energy being the same quantity). A fixed prior keeps the Occam
  factor of the comparison proper.

Each alternative ``k`` gets the posterior probability ``pi_k ~ p(y | k) p(k)`` with a
uniform ``p(k)`` and ``p(y | k)`` approximated by the evidence at its MAP-II
hyperparameters, ``p(y | theta_k, beta_k, k)`` (MacKay 1992 compares models by this
evidence times an Occam factor of their hyperparameters, taken here as the same for
every alternative; the hyperprior's density, whose normalising constants penalise
alternatives with more cluster orders, gave larger errors on Cu-Au). Predictions average
over them (Bayesian model averaging, Hoeting, Madigan, Raftery & Volinsky, Statistical
Science 14, 382, 1999): the mixture is moment-matched to one Gaussian weight posterior
(weights of columns a sub-basis lacks are zero in it)::

    m = sum_k pi_k m_k        C = sum_k pi_k (Sigma_k + m_k m_k^T) - m m^T

so ``x^T m`` is the mixture's predictive mean and ``x^T C x`` its epistemic variance,
within-model ``sum_k pi_k x^T Sigma_k x`` plus between-model ``sum_k pi_k (x^T m_k -
x^T m)^2``; the noise variance is ``sum_k pi_k / beta_k``. Alternatives with
``pi_k < MIN_WEIGHT`` are dropped. ``average=False`` keeps only the most probable one.

Every alternative tried, its log evidence, log hyperprior and weight are kept in
:attr:`choices_` and in :meth:`to_dict` (the model document).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from alcampaign.science.priors import (
    SLOPE_BOUNDS,
    ColumnInfo,
    describe_basis,
    nested_bases,
    prior_design,
)
from alcampaign.science.surrogate import (
    ENERGY,
    FORCE,
    LOG_ALPHA_BOUNDS,
    LOG_BETA_BOUNDS,
    BayesianLinearRegression,
    Prediction,
)

PRIOR_CHOICES = ("hierarchical", "isotropic", "auto")
NOISE_FRACTION = 0.1  # hyperprior centre of the noise sd, as a fraction of the labels' sd
LEVEL_LOG_SD = 3.0  # hyperprior sd of each log prior-precision level (natural log)
NOISE_LOG_SD = 1.5  # hyperprior sd of the log noise precision of energy rows
MIN_WEIGHT = 1e-3  # alternatives less probable than this leave the model average
VALIDATION_MASS, VALIDATION_MAX = 0.9, 4  # alternatives a cross-validation fold re-fits


@dataclass
class _Option:
    """One alternative judged: basis mask, prior, delta term, its MAP-II hyperparameters."""

    mask: np.ndarray
    prior: str
    cheap: bool
    log_evidence: float = -np.inf  # log p(y | theta, beta, option) at the hyperparameters
    log_hyperprior: float = 0.0  # log p(theta, beta | option) there
    theta: np.ndarray | None = None
    log_betas: np.ndarray | None = None
    names: list | None = None
    weight: float = 0.0  # posterior probability in the model average

    @property
    def score(self) -> float:
        """Log of evidence times hyperprior (the MAP-II objective)."""
        return self.log_evidence + self.log_hyperprior


@dataclass
class _Component:
    """The posterior of one alternative of the average, on its columns ``S``."""

    option: _Option
    S: np.ndarray
    L: np.ndarray
    m: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray


def _log_normal_density(p, mean, sd, width) -> tuple[float, np.ndarray]:
    """Log density and gradient of independent hyperpriors on the entries of ``p``:
    normal where ``sd`` is finite, uniform over ``width`` where it is infinite, nothing
    where ``width`` is 0 (a fixed value)."""
    gauss = np.isfinite(sd)
    flat = ~gauss & (width > 0)
    z = (p[gauss] - mean[gauss]) / sd[gauss]
    log_p = float(
        np.sum(-0.5 * z * z - np.log(sd[gauss] * np.sqrt(2 * np.pi))) - np.sum(np.log(width[flat]))
    )
    grad = np.zeros_like(p)
    grad[gauss] = -z / sd[gauss]
    return log_p, grad


@dataclass
class BayesianClusterExpansion(BayesianLinearRegression):
    """Bayesian linear model with physical priors and hyperpriors, averaged over bases.

    Parameters
    ----------
    columns
        :class:`ColumnInfo` of the design matrix; ``None``: every column generic
        (one prior level), no cheap column.
    prior
        ``hierarchical``, ``isotropic`` or ``auto`` (both, judged by evidence).
    select_basis
        Judge the nested sub-bases of the offer; otherwise use every column.
    cheap
        ``auto``: judge the model with and without the cheap columns; ``on``; ``off``.
    cheap_precision
        Fixed prior precision of a cheap column's weight.
    hyperprior
        MAP-II with the log-normal hyperpriors of the module docstring; ``False``: ML-II.
    average
        Average the alternatives by their posterior probability; ``False``: keep the
        most probable one.
    basis_mask
        Use exactly these columns (cheap columns as ``cheap`` says); overrides
        ``select_basis``.
    alternatives
        Judge exactly these ``(mask, prior, cheap)`` alternatives (for cross-validation
        folds: :meth:`for_validation`); overrides ``basis_mask``, ``select_basis``,
        ``prior`` and ``cheap``.
    patience
        Stop the scan over nested bases (smallest first) after this many bases without a
        better score; ``None``: try them all (the evidence of nested bases need not be
        unimodal in their size: it was not on the Cu-Au pool).
    beta, beta_force, center
        As :class:`BayesianLinearRegression` (``alpha`` is not used).
    """

    columns: ColumnInfo | None = None
    prior: str = "hierarchical"
    select_basis: bool = True
    cheap: str = "auto"
    cheap_precision: float = 1.0
    hyperprior: bool = True
    average: bool = True
    patience: int | None = None
    basis_mask: np.ndarray | None = None
    alternatives: list | None = None
    mask_: np.ndarray = field(default=None, init=False, repr=False)
    alphas_: np.ndarray = field(default=None, init=False, repr=False)
    choice_: _Option = field(default=None, init=False, repr=False)
    choices_: list = field(default_factory=list, init=False, repr=False)
    components_: list = field(default_factory=list, init=False, repr=False)
    _cov: np.ndarray = field(default=None, init=False, repr=False)
    _frozen: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prior not in PRIOR_CHOICES:
            raise ValueError(f"unknown prior {self.prior!r}; choose one of {PRIOR_CHOICES}")
        if self.cheap not in ("auto", "on", "off"):
            raise ValueError("cheap must be 'auto', 'on' or 'off'")

    # -- evidence on a sub-basis ---------------------------------------------------

    def _info(self, d: int) -> ColumnInfo:
        info = self.columns if self.columns is not None else ColumnInfo.generic(d)
        if info.size != d:
            raise ValueError(f"columns describe {info.size} columns but X has {d}")
        return info

    def _restrict(self, S) -> tuple:
        """The sufficient statistics on columns ``S`` for the kinds of rows present."""
        st = self._stats
        b, yy, _ = self._centered()
        active = np.flatnonzero(st["n"] > 0)
        return (
            st["G"][np.ix_(active, S, S)],
            b[np.ix_(active, S)],
            yy[active],
            st["n"][active],
            active,
        )

    def _evidence(
        self, S, T, theta, log_betas, fixed_alpha, pre=None
    ) -> tuple[float, np.ndarray, tuple]:
        """Log evidence on columns ``S``, its gradient in (theta, log beta), posterior.

        ``pre``: :meth:`_restrict` of ``S`` (computed when not given)."""
        G, bS, yy, n, active = self._restrict(S) if pre is None else pre
        alpha = np.exp(T @ theta) if T.shape[1] else np.empty(0)
        alpha = np.where(np.isnan(fixed_alpha), alpha if alpha.size else 0.0, fixed_alpha)
        log_b = np.asarray(log_betas, dtype=float)[active]
        b_act = np.exp(log_b)
        A = np.diag(alpha) + np.tensordot(b_act, G, axes=1)
        try:
            L = cholesky(A, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return -np.inf, np.zeros(T.shape[1] + 2), None
        m = cho_solve((L, True), b_act @ bS, check_finite=False)
        L_inv = solve_triangular(L, np.eye(len(S)), lower=True, check_finite=False)
        Sigma = L_inv.T @ L_inv
        r = np.maximum(yy - 2 * bS @ m + np.einsum("i,gij,j->g", m, G, m), 0.0)
        log_e = 0.5 * (
            np.log(alpha).sum()
            + n @ log_b
            - 2 * np.log(np.diag(L)).sum()
            - b_act @ r
            - alpha @ (m * m)
            - n.sum() * np.log(2 * np.pi)
        )
        d_log_alpha = 0.5 * (1.0 - alpha * (np.diag(Sigma) + m * m))
        d_log_alpha[~np.isnan(fixed_alpha)] = 0.0
        d_log_beta = np.zeros(2)
        d_log_beta[active] = 0.5 * (n - b_act * (r + (G * Sigma).sum(axis=(1, 2))))
        return (
            float(log_e),
            np.r_[T.T @ d_log_alpha, d_log_beta],
            (L, m, alpha, np.exp(np.asarray(log_betas, dtype=float))),
        )

    def _design(self, option: _Option, info: ColumnInfo):
        """Columns, prior design (without the fixed cheap level) and fixed precisions."""
        S = np.flatnonzero(option.mask)
        sub = ColumnInfo(info.order[S], info.diameter[S], info.cheap[S])
        fixed_alpha = np.where(sub.cheap, self.cheap_precision, np.nan)
        T, names = prior_design(sub, option.prior)
        keep = [i for i, n in enumerate(names) if n != "cheap"]
        return S, sub, T[:, keep], [names[i] for i in keep], fixed_alpha

    def _label_variance(self) -> float:
        st = self._stats
        _, yy, _ = self._centered()
        return max(yy[ENERGY] / st["n"][ENERGY], 1e-12) if st["n"][ENERGY] > 0 else 1.0

    def _hyperprior(self, names, S, sub, bounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, sd (inf: uniform) and bound width (0: fixed) of each hyperparameter."""
        st = self._stats
        var = self._label_variance()
        lo, hi = np.array(bounds).T
        width = hi - lo
        mean = np.zeros(len(bounds))
        sd = np.full(len(bounds), np.inf)
        if not self.hyperprior:
            return mean, sd, width
        g = ENERGY if st["n"][ENERGY] > 0 else FORCE
        x2 = np.diag(st["G"][g])[S][~sub.cheap] / max(st["n"][g], 1e-12)
        level = np.log(max(x2.sum(), 1e-12) / var)
        for i, nm in enumerate(names):
            if not nm.startswith("diameter_slope"):
                mean[i], sd[i] = level, LEVEL_LOG_SD
        k = len(names)
        if width[k + ENERGY] > 0 and st["n"][ENERGY] > 0:
            mean[k + ENERGY] = -np.log(NOISE_FRACTION**2 * var)
            sd[k + ENERGY] = NOISE_LOG_SD
        return mean, sd, width

    def _optimise(self, option: _Option, info: ColumnInfo, warm: _Option | None = None) -> _Option:
        """MAP-II hyperparameters of one alternative (L-BFGS-B, analytic gradient)."""
        S, sub, T, names, fixed_alpha = self._design(option, info)
        st = self._stats
        var = self._label_variance()
        fixed_beta = [self.beta, self.beta_force]
        free_beta = [fixed_beta[g] is None and st["n"][g] > 0 for g in (ENERGY, FORCE)]
        log_b0 = np.array(
            [
                np.log(fixed_beta[g]) if fixed_beta[g] is not None else np.log(10.0 / var)
                for g in (ENERGY, FORCE)
            ]
        )
        if not st["n"][FORCE] > 0 and fixed_beta[FORCE] is None:
            log_b0[FORCE] = log_b0[ENERGY]
        k = T.shape[1]
        bounds = [
            SLOPE_BOUNDS if nm.startswith("diameter_slope") else LOG_ALPHA_BOUNDS for nm in names
        ]
        bounds += [LOG_BETA_BOUNDS if free_beta[g] else (log_b0[g], log_b0[g]) for g in (0, 1)]
        h_mean, h_sd, h_width = self._hyperprior(names, S, sub, bounds)
        pre = self._restrict(S)

        def neg(p):
            le, grad, _ = self._evidence(S, T, p[:k], p[k:], fixed_alpha, pre)
            if not np.isfinite(le):
                return 1e300, np.zeros_like(p)
            lp, glp = _log_normal_density(p, h_mean, h_sd, h_width)
            return -(le + lp), -(grad + glp)

        theta0 = np.array(
            [0.5 if nm.startswith("diameter_slope") else -np.log(var) for nm in names]
        )
        # start at the hyperprior's centre where there is one
        x0 = np.where(np.isfinite(h_sd), h_mean, np.r_[theta0, log_b0])
        starts = [x0]
        if warm is not None and warm.names is not None:
            # and at the best smaller basis's hyperparameters (new levels at the centre)
            theta0 = x0[:k]
            starts.insert(
                0,
                np.r_[
                    [
                        dict(zip(warm.names, warm.theta, strict=True)).get(nm, t)
                        for nm, t in zip(names, theta0, strict=True)
                    ],
                    warm.log_betas,
                ],
            )
        lo, hi = np.array(bounds).T
        best = None
        for x0 in starts:
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                res = minimize(
                    neg,
                    np.clip(x0, lo, hi),
                    jac=True,
                    method="L-BFGS-B",
                    bounds=bounds,
                    options={"ftol": 1e-8, "gtol": 1e-4},
                )
            if best is None or res.fun < best.fun:
                best = res
        option.theta, option.log_betas, option.names = best.x[:k], best.x[k:], names
        option.log_hyperprior = _log_normal_density(best.x, h_mean, h_sd, h_width)[0]
        option.log_evidence = -float(best.fun) - option.log_hyperprior
        return option

    # -- fitting -------------------------------------------------------------------

    def _candidates(self, info: ColumnInfo) -> list[list[_Option]]:
        """The alternatives to judge, grouped by basis (smallest first)."""
        if self.alternatives is not None:
            return [
                [_Option(np.asarray(m, dtype=bool), p, bool(c))] for m, p, c in self.alternatives
            ]
        priors = ["hierarchical", "isotropic"] if self.prior == "auto" else [self.prior]
        cheap = {"auto": [False, True], "on": [True], "off": [False]}[self.cheap]
        if not info.cheap.any():
            cheap = [False]
        if self.basis_mask is not None:
            bases = [np.asarray(self.basis_mask, dtype=bool) | info.cheap]
        elif self.select_basis:
            bases = nested_bases(info)
        else:
            bases = [np.ones(info.size, dtype=bool)]
        return [
            [_Option(mask & (~info.cheap | c), p, c) for c in cheap for p in priors]
            for mask in bases
        ]

    def _search(self, info: ColumnInfo) -> list[_Option]:
        """MAP-II for each alternative, smallest basis first.

        Each alternative is warm-started from the best of the previous bases with the
        same prior; with ``patience`` the scan stops once the best score has not
        improved for that many bases in a row.
        """
        tried: list[_Option] = []
        best, since = None, 0
        for level in self._candidates(info):
            for o in level:
                warm = best if best is not None and best.prior == o.prior else None
                self._optimise(o, info, warm)
            tried += level
            top = max(level, key=lambda o: o.score)
            if best is None or top.score > best.score:
                best, since = top, 0
            else:
                since += 1
                if self.patience is not None and since >= self.patience:
                    break
        return tried

    def optimize_hyperparameters(self) -> BayesianClusterExpansion:
        """MAP-II for every alternative, then the model average (or the best one)."""
        info = self._info(self._stats["G"].shape[1])
        # Hundreds of small factorisations: threaded BLAS only adds contention.
        with threadpool_limits(limits=1, user_api="blas"):
            if not self._frozen:
                self.choices_ = self._search(info)
            self._combine(info)
        return self

    def _combine(self, info: ColumnInfo) -> None:
        """Posterior of every alternative at its hyperparameters, their weights
        (evidence times hyperprior, renormalised) and the moment-matched mixture."""
        comps = []
        for o in self.choices_:
            S, _, T, _, fixed_alpha = self._design(o, info)
            le, _, post = self._evidence(S, T, o.theta, o.log_betas, fixed_alpha)
            o.log_evidence = le
            comps.append(None if post is None else _Component(o, S, *post))
        scores = np.array(
            [
                o.log_evidence if c is not None else -np.inf
                for o, c in zip(self.choices_, comps, strict=True)
            ]
        )
        if not np.isfinite(scores).any():
            raise np.linalg.LinAlgError("no alternative has a positive definite posterior")
        w = np.exp(scores - scores.max())
        if not self.average:
            w = (np.arange(w.size) == np.argmax(scores)).astype(float)
        w /= w.sum()
        w[w < MIN_WEIGHT] = 0.0
        w /= w.sum()
        for o, wk in zip(self.choices_, w, strict=True):
            o.weight = float(wk)
        self.components_ = [c for c, wk in zip(comps, w, strict=True) if wk > 0]
        self._mix(info)

    def _mix(self, info: ColumnInfo) -> None:
        d = info.size
        mean, second, inv_beta = np.zeros(d), np.zeros((d, d)), np.zeros(2)
        for c in self.components_:
            w = c.option.weight
            Sigma = cho_solve((c.L, True), np.eye(c.S.size))
            mean[c.S] += w * c.m
            second[np.ix_(c.S, c.S)] += w * (Sigma + np.outer(c.m, c.m))
            inv_beta += w / c.betas
        cov = second - np.outer(mean, mean)
        self._cov = 0.5 * (cov + cov.T)
        self.mean_ = mean
        self.betas_ = 1.0 / inv_beta
        self.offset_ = float(self._centered()[2])
        top = max(self.components_, key=lambda c: c.option.weight)
        self.choice_ = top.option
        self.mask_ = np.zeros(d, dtype=bool)
        for c in self.components_:
            self.mask_[c.S] = True
        self.alphas_ = top.alphas
        self.alpha_ = float(np.exp(np.mean(np.log(top.alphas))))
        self._log_evidence = top.option.log_evidence
        self.chol_ = None

    def update(self, X, y, kind=None, weight=None) -> BayesianClusterExpansion:
        """Add labels at fixed hyperparameters and alternatives (posteriors and weights
        recomputed)."""
        from alcampaign.science.surrogate import _as_rows

        self._check_fitted()
        X, y, kind, weight = _as_rows(X, y, kind, weight)
        self._accumulate(X, y, kind, weight)
        self._combine(self._info(self.mean_.size))
        return self

    def for_validation(self) -> BayesianClusterExpansion:
        """An unfitted model that judges only the most probable alternatives of this
        model's average (by weight until ``VALIDATION_MASS`` of it, at most
        ``VALIDATION_MAX``) and re-maximises their hyperparameters (for
        cross-validation folds: a few optimisations a fold instead of the whole scan;
        the alternatives were chosen with every label, so folds are slightly optimistic
        about them)."""
        self._check_fitted()
        ranked = sorted(self.components_, key=lambda c: -c.option.weight)
        mass = np.cumsum([c.option.weight for c in ranked])
        n_keep = min(int(np.searchsorted(mass, VALIDATION_MASS)) + 1, VALIDATION_MAX, len(ranked))
        return BayesianClusterExpansion(
            beta=self.beta,
            beta_force=self.beta_force,
            center=self.center,
            columns=self.columns,
            cheap_precision=self.cheap_precision,
            hyperprior=self.hyperprior,
            average=self.average,
            alternatives=[
                (c.option.mask.copy(), c.option.prior, c.option.cheap) for c in ranked[:n_keep]
            ],
        )

    def frozen(self) -> BayesianClusterExpansion:
        """An unfitted copy that keeps this model's alternatives and their
        hyperparameters (for bootstrap members: ``fit`` then only computes the posteriors
        and the weights)."""
        self._check_fitted()
        twin = BayesianClusterExpansion(
            beta=self.beta,
            beta_force=self.beta_force,
            center=self.center,
            columns=self.columns,
            prior=self.prior,
            select_basis=self.select_basis,
            cheap=self.cheap,
            cheap_precision=self.cheap_precision,
            hyperprior=self.hyperprior,
            average=self.average,
            patience=self.patience,
        )
        twin.choices_ = [replace(o) for o in self.choices_]
        twin._frozen = True
        return twin

    # -- prediction ------------------------------------------------------------------

    def predict(self, X, kind: int = ENERGY) -> Prediction:
        """Mixture predictive mean, epistemic variance (within plus between the
        alternatives) and noise variance at rows ``X``."""
        self._check_fitted()
        X = np.atleast_2d(np.asarray(X, dtype=float))
        mean = X @ self.mean_ + (self.offset_ if kind == ENERGY else 0.0)
        Xm = X[:, self.mask_]
        cov = self._cov[np.ix_(self.mask_, self.mask_)]
        epistemic = np.maximum(((Xm @ cov) * Xm).sum(axis=1), 0.0)
        return Prediction(mean, epistemic, np.full(X.shape[0], 1 / self.betas_[kind]))

    @property
    def covariance_(self) -> np.ndarray:
        """Moment-matched posterior covariance of all weights (zero outside the bases
        of the average)."""
        self._check_fitted()
        return self._cov.copy()

    def to_dict(self) -> dict:
        """Hyperparameters, the alternatives and their weights, the posterior.

        ``prior``, ``prior_hyperparameters``, ``alphas`` and ``basis`` describe the most
        probable alternative; ``model_average`` lists every alternative of the average
        with its columns, prior precisions, noise precision and weight.
        """
        out = super().to_dict()
        info = self._info(self.mask_.size)
        o = self.choice_
        p_cheap = sum(c.option.weight for c in self.components_ if c.option.cheap)
        out.update(
            kind="bayesian_cluster_expansion",
            prior=o.prior,
            prior_hyperparameters=dict(zip(o.names, np.asarray(o.theta).tolist(), strict=True))
            if o.names is not None
            else None,
            alphas=self.alphas_.tolist(),
            basis={
                "n_columns": int(o.mask.sum()),
                "n_offered": int(o.mask.size - info.cheap.sum()),
                "columns": np.flatnonzero(o.mask).tolist(),
                "orders": describe_basis(info, o.mask),
            },
            cheap_energy={
                "offered": bool(info.cheap.any()),
                "used": bool(p_cheap > 0.5),
                "probability": float(p_cheap),
                "weight": [float(w) for w in self.mean_[info.cheap]] if p_cheap > 0 else None,
            },
            hyperprior="map_ii" if self.hyperprior else "ml_ii",
            model_average=[
                {
                    "weight": c.option.weight,
                    "columns": c.S.tolist(),
                    "prior": c.option.prior,
                    "cheap_energy": bool(c.option.cheap),
                    "alphas": c.alphas.tolist(),
                    "beta": float(c.betas[ENERGY]),
                    "log_evidence": float(c.option.log_evidence),
                }
                for c in self.components_
            ],
            evidence_choices=[
                {
                    "n_columns": int(c.mask.sum()),
                    "prior": c.prior,
                    "cheap_energy": bool(c.cheap),
                    "log_evidence": float(c.log_evidence),
                    "log_hyperprior": float(c.log_hyperprior),
                    "weight": float(c.weight),
                }
                for c in self.choices_
            ],
        )
        return out
