"""Bayesian cluster expansion: physical priors, the basis and the delta term by evidence.

The model is the Bayesian linear model of :mod:`alcampaign.science.surrogate` with a
prior of one precision per column, ``w_j ~ N(0, 1/alpha_j)``, ``log alpha = T theta``
(:func:`alcampaign.science.priors.prior_design`): precisions grow with the cluster's
order and diameter (Mueller & Ceder, PRB 80, 024103, 2009). The hyperparameters
``theta`` and the noise precisions maximise the evidence (type-II maximum likelihood,
MacKay, Neural Computation 4, 415, 1992), with its analytic gradient::

    log p(y) = 1/2 sum_j log alpha_j + 1/2 sum_g n_g log beta_g - 1/2 log|A|
               - 1/2 (sum_g beta_g |y_g - X_g m|^2 + sum_j alpha_j m_j^2) - n/2 log 2 pi
    d log p / d log alpha_j = 1/2 (1 - alpha_j (Sigma_jj + m_j^2))
    d log p / d log beta_g  = 1/2 (n_g - beta_g (|y_g - X_g m|^2 + tr(X_g^T X_g Sigma)))

with ``A = diag(alpha) + sum_g beta_g X_g^T X_g``, ``Sigma = A^-1``, ``m = Sigma sum_g
beta_g X_g^T y_g`` (Bishop, PRML, sec. 3.5).

The evidence then chooses, as a model comparison (Bishop sec. 3.4):

* the **basis**: among the nested sub-bases of the offered cutoffs
  (:func:`alcampaign.science.priors.nested_bases`), so a user offers the largest cutoffs
  they can afford and the model does the rest;
* the **prior** (``prior="auto"``: hierarchical or isotropic);
* the **delta term**: columns flagged ``cheap`` hold a cheap fidelity's energy (e.g. the
  CHGNet prescreen energy per atom, centred), an extra feature with its own weight
  ``w_c ~ N(0, 1/alpha_c)`` at a *fixed* ``alpha_c`` (``cheap_precision``; 1: a weight of
  order one, the cheap energy being the same quantity). A fixed prior keeps the Occam
  factor of the comparison proper (a free ``alpha_c`` would let chance correlations in
  noise through); the columns are kept only when the evidence with them is higher.

Every alternative tried and its log evidence are kept in :attr:`choices_` and in
:meth:`to_dict` (the model document).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class _Option:
    """One alternative the evidence judged: basis mask, prior, delta term."""

    mask: np.ndarray
    prior: str
    cheap: bool
    log_evidence: float = -np.inf
    theta: np.ndarray | None = None
    log_betas: np.ndarray | None = None
    names: list | None = None


@dataclass
class BayesianClusterExpansion(BayesianLinearRegression):
    """Bayesian linear model with physical priors; basis, prior and delta term by evidence.

    Parameters
    ----------
    columns
        :class:`ColumnInfo` of the design matrix; ``None``: every column generic
        (one prior level), no cheap column.
    prior
        ``hierarchical``, ``isotropic`` or ``auto`` (the evidence chooses).
    select_basis
        Choose among nested sub-bases by evidence; otherwise use every column.
    cheap
        ``auto``: keep the cheap columns only when the evidence says they help; ``on``;
        ``off``.
    cheap_precision
        Fixed prior precision of a cheap column's weight.
    basis_mask
        Use exactly these columns (cheap columns as ``cheap`` says); overrides
        ``select_basis``.
    patience
        Stop the scan over nested bases (smallest first) after this many bases without a
        better evidence; ``None``: try them all (the evidence of nested bases need not be
        unimodal in their size: it was not on the Cu-Au pool).
    beta, beta_force, center
        As :class:`BayesianLinearRegression` (``alpha`` is not used).
    """

    columns: ColumnInfo | None = None
    prior: str = "hierarchical"
    select_basis: bool = True
    cheap: str = "auto"
    cheap_precision: float = 1.0
    patience: int | None = None
    basis_mask: np.ndarray | None = None
    mask_: np.ndarray = field(default=None, init=False, repr=False)
    alphas_: np.ndarray = field(default=None, init=False, repr=False)
    choice_: _Option = field(default=None, init=False, repr=False)
    choices_: list = field(default_factory=list, init=False, repr=False)
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

    def _evidence(self, S, T, theta, log_betas, fixed_alpha) -> tuple[float, np.ndarray, tuple]:
        """Log evidence on columns ``S``, its gradient in (theta, log beta), posterior."""
        st = self._stats
        b, yy, _ = self._centered()
        G = st["G"][:, S][:, :, S]
        bS = b[:, S]
        alpha = np.exp(T @ theta) if T.shape[1] else np.empty(0)
        alpha = np.where(np.isnan(fixed_alpha), alpha if alpha.size else 0.0, fixed_alpha)
        betas = np.exp(log_betas)
        A = np.diag(alpha) + np.tensordot(betas, G, axes=1)
        try:
            L = cholesky(A, lower=True)
        except np.linalg.LinAlgError:
            return -np.inf, np.zeros(T.shape[1] + 2), None
        m = cho_solve((L, True), betas @ bS)
        Sigma = cho_solve((L, True), np.eye(len(S)))
        n = st["n"]
        r = yy - 2 * bS @ m + np.einsum("i,gij,j->g", m, G, m)
        r = np.maximum(r, 0.0)
        active = n > 0
        log_e = 0.5 * (
            np.log(alpha).sum()
            + np.sum(n[active] * log_betas[active])
            - 2 * np.log(np.diag(L)).sum()
            - np.sum(betas[active] * r[active])
            - alpha @ (m * m)
            - n[active].sum() * np.log(2 * np.pi)
        )
        d_log_alpha = 0.5 * (1.0 - alpha * (np.diag(Sigma) + m * m))
        d_log_alpha[~np.isnan(fixed_alpha)] = 0.0
        d_log_beta = 0.5 * (n - betas * (r + np.einsum("gij,ij->g", G, Sigma)))
        d_log_beta[~active] = 0.0
        return float(log_e), np.r_[T.T @ d_log_alpha, d_log_beta], (L, m, alpha, betas)

    def _optimise(self, option: _Option, info: ColumnInfo, warm: _Option | None = None) -> _Option:
        S = np.flatnonzero(option.mask)
        sub = ColumnInfo(info.order[S], info.diameter[S], info.cheap[S])
        fixed_alpha = np.where(sub.cheap, self.cheap_precision, np.nan)
        T, names = prior_design(sub, option.prior)
        keep = [i for i, n in enumerate(names) if n != "cheap"]
        T, names = T[:, keep], [names[i] for i in keep]
        st = self._stats
        _, yy, _ = self._centered()
        var = max(yy[ENERGY] / st["n"][ENERGY], 1e-8) if st["n"][ENERGY] > 0 else 1.0
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

        def neg(p):
            le, grad, _ = self._evidence(S, T, p[:k], p[k:], fixed_alpha)
            if not np.isfinite(le):
                return 1e300, np.zeros_like(p)
            return -le, -grad

        theta0 = np.array(
            [0.5 if nm.startswith("diameter_slope") else -np.log(var) for nm in names]
        )
        starts = [np.r_[theta0, log_b0]]
        if warm is not None and warm.names is not None:
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
        option.theta, option.log_betas = best.x[:k], best.x[k:]
        option.log_evidence = -float(best.fun)
        option.names = names
        return option

    # -- fitting -------------------------------------------------------------------

    def _search(self, info: ColumnInfo) -> list[_Option]:
        """Optimise the evidence of each alternative, smallest basis first.

        At each basis every prior and delta-term variant is tried, warm-started from
        the best of the previous bases; with ``patience`` the scan stops once the best
        evidence has not improved for that many bases in a row.
        """
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
        tried: list[_Option] = []
        best, since = None, 0
        for mask in bases:
            level = []
            for c in cheap:
                for p in priors:
                    warm = best if best is not None and best.prior == p else None
                    level.append(
                        self._optimise(_Option(mask & (~info.cheap | c), p, c), info, warm)
                    )
            tried += level
            top = max(level, key=lambda o: o.log_evidence)
            if best is None or top.log_evidence > best.log_evidence:
                best, since = top, 0
            else:
                since += 1
                if self.patience is not None and since >= self.patience:
                    break
        return tried

    def optimize_hyperparameters(self) -> BayesianClusterExpansion:
        """Maximise the evidence for every alternative, keep the best, factorise it."""
        if self._frozen:
            self._factorise()
            return self
        info = self._info(self._stats["G"].shape[1])
        # Hundreds of small factorisations: threaded BLAS only adds contention.
        with threadpool_limits(limits=1, user_api="blas"):
            self.choices_ = self._search(info)
        self.choice_ = max(self.choices_, key=lambda o: o.log_evidence)
        self._set_choice(info)
        return self

    def _set_choice(self, info: ColumnInfo) -> None:
        o = self.choice_
        S = np.flatnonzero(o.mask)
        sub = ColumnInfo(info.order[S], info.diameter[S], info.cheap[S])
        T, names = prior_design(sub, o.prior)
        keep = [i for i, n in enumerate(names) if n != "cheap"]
        alpha = np.exp(T[:, keep] @ o.theta) if keep else np.zeros(len(S))
        self.mask_ = o.mask.copy()
        self.alphas_ = np.where(sub.cheap, self.cheap_precision, alpha)
        self.betas_ = np.exp(o.log_betas)
        self.alpha_ = float(np.exp(np.mean(np.log(self.alphas_))))
        self._factorise()

    def _factorise(self) -> None:
        S = np.flatnonzero(self.mask_)
        G = self._stats["G"][:, S][:, :, S]
        A = np.diag(self.alphas_) + np.tensordot(self.betas_, G, axes=1)
        self.chol_ = cholesky(A, lower=True)
        self._solve_mean()

    def _solve_mean(self) -> None:
        b, _, c = self._centered()
        S = np.flatnonzero(self.mask_)
        self.offset_ = float(c)
        mean = np.zeros(self.mask_.size)
        mean[S] = cho_solve((self.chol_, True), self.betas_ @ b[:, S])
        self.mean_ = mean
        T = np.eye(len(S))  # log-alpha per column: the evidence at these alphas
        le, _, _ = self._evidence(
            S, T, np.log(self.alphas_), np.log(self.betas_), np.full(len(S), np.nan)
        )
        self._log_evidence = le

    def update(self, X, y, kind=None, weight=None) -> BayesianClusterExpansion:
        """Add labels at fixed hyperparameters, basis and delta term (refactorises)."""
        from alcampaign.science.surrogate import _as_rows

        self._check_fitted()
        X, y, kind, weight = _as_rows(X, y, kind, weight)
        self._accumulate(X, y, kind, weight)
        self._factorise()
        return self

    def for_validation(self) -> BayesianClusterExpansion:
        """An unfitted model that keeps this one's choice of basis, prior and delta term
        and re-maximises only their hyperparameters (for cross-validation folds: one
        evidence optimisation a fold instead of the whole scan over alternatives; the
        choice itself saw every label, so folds are slightly optimistic about it)."""
        self._check_fitted()
        o = self.choice_
        return BayesianClusterExpansion(
            beta=self.beta,
            beta_force=self.beta_force,
            center=self.center,
            columns=self.columns,
            prior=o.prior,
            select_basis=False,
            cheap="on" if o.cheap else "off",
            cheap_precision=self.cheap_precision,
            basis_mask=o.mask.copy(),
        )

    def frozen(self) -> BayesianClusterExpansion:
        """An unfitted copy that keeps this model's hyperparameters, basis and delta term
        (for bootstrap members: ``fit`` then only computes the posterior)."""
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
            patience=self.patience,
        )
        twin.mask_, twin.alphas_, twin.betas_ = self.mask_, self.alphas_, self.betas_.copy()
        twin.alpha_, twin.choice_, twin._frozen = self.alpha_, self.choice_, True
        return twin

    # -- prediction ------------------------------------------------------------------

    def predict(self, X, kind: int = ENERGY) -> Prediction:
        """Predictive mean, epistemic and aleatoric variance at rows ``X``."""
        self._check_fitted()
        X = np.atleast_2d(np.asarray(X, dtype=float))
        mean = X @ self.mean_ + (self.offset_ if kind == ENERGY else 0.0)
        v = solve_triangular(self.chol_, X[:, self.mask_].T, lower=True)
        return Prediction(mean, (v * v).sum(axis=0), np.full(X.shape[0], 1 / self.betas_[kind]))

    @property
    def covariance_(self) -> np.ndarray:
        """Posterior covariance of all weights (zero outside the chosen basis)."""
        self._check_fitted()
        S = np.flatnonzero(self.mask_)
        out = np.zeros((self.mask_.size, self.mask_.size))
        out[np.ix_(S, S)] = cho_solve((self.chol_, True), np.eye(len(S)))
        return out

    def to_dict(self) -> dict:
        """Hyperparameters, the evidence's choice and every alternative, the posterior."""
        out = super().to_dict()
        info = self._info(self.mask_.size)
        o = self.choice_
        out.update(
            kind="bayesian_cluster_expansion",
            prior=o.prior,
            prior_hyperparameters=dict(zip(o.names, np.asarray(o.theta).tolist(), strict=True))
            if o.names is not None
            else None,
            alphas=self.alphas_.tolist(),
            basis={
                "n_columns": int(self.mask_.sum()),
                "n_offered": int(self.mask_.size - info.cheap.sum()),
                "columns": np.flatnonzero(self.mask_).tolist(),
                "orders": describe_basis(info, self.mask_),
            },
            cheap_energy={
                "offered": bool(info.cheap.any()),
                "used": bool(o.cheap),
                "weight": [float(w) for w in self.mean_[info.cheap]] if o.cheap else None,
            },
            evidence_choices=[
                {
                    "n_columns": int(c.mask.sum()),
                    "prior": c.prior,
                    "cheap_energy": bool(c.cheap),
                    "log_evidence": float(c.log_evidence),
                }
                for c in self.choices_
            ],
        )
        return out
