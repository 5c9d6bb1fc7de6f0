"""Bayesian linear surrogate models (pure numpy/scipy).

The model is ``y = X w + eps`` with a Gaussian prior ``w ~ N(0, alpha^-1 I)`` and Gaussian
noise ``eps ~ N(0, beta^-1)``. The posterior over the weights is Gaussian with

    A = alpha I + beta X^T X          (posterior precision)
    m = beta A^-1 X^T (y - y0)        (posterior mean)
    S = A^-1                          (posterior covariance)

where ``y0`` is a constant target offset (the mean of the training targets) that keeps
the prior centred on the data. Everything is computed through a Cholesky factor of
``A``; no explicit inverse is formed. The hyperparameters ``alpha`` and ``beta`` are
chosen by maximising the log marginal likelihood (the evidence) unless they are fixed.

A prediction separates the two kinds of uncertainty:

* epistemic variance ``x^T S x`` (what more data would remove), and
* aleatoric variance ``1 / beta`` (noise the model cannot remove).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize

# Bounds on log(alpha) and log(beta). beta = 1/sigma^2 with sigma in eV/atom: the upper
# bound is sigma = 0.1 meV/atom, the lower bound sigma = 3 eV/atom.
LOG_ALPHA_BOUNDS = (-12.0, 25.0)
LOG_BETA_BOUNDS = (-2.2, 18.4)


@dataclass
class Prediction:
    """Predictive distribution of a surrogate at a set of inputs.

    Attributes
    ----------
    mean
        Predictive mean, shape ``(n,)``.
    epistemic_var
        Variance from the uncertainty in the weights, shape ``(n,)``.
    aleatoric_var
        Noise variance, shape ``(n,)``.
    """

    mean: np.ndarray
    epistemic_var: np.ndarray
    aleatoric_var: np.ndarray

    @property
    def total_var(self) -> np.ndarray:
        """Epistemic plus aleatoric variance."""
        return self.epistemic_var + self.aleatoric_var

    @property
    def std(self) -> np.ndarray:
        """Total predictive standard deviation."""
        return np.sqrt(self.total_var)


class Surrogate(Protocol):
    """What the controller, the acquisition rules and the stopping rules need."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Surrogate: ...

    def predict(self, X: np.ndarray) -> Prediction: ...

    def log_evidence(self) -> float: ...


def _neg_log_evidence(
    log_params: np.ndarray, eigvals: np.ndarray, proj: np.ndarray, yty: float, n: int
) -> float:
    """Negative log evidence from the eigen-decomposition of X^T X.

    ``eigvals`` are the eigenvalues of X^T X and ``proj = V^T X^T y`` its eigenbasis
    projection of the targets; that makes every evaluation O(d).
    """
    alpha, beta = np.exp(log_params)
    d = eigvals.size
    a = alpha + beta * eigvals  # eigenvalues of the posterior precision A
    # m in the eigenbasis, and the two quadratic terms of E(m).
    m_eig = beta * proj / a
    # ||y - X m||^2 = y^T y - 2 m^T X^T y + m^T X^T X m
    resid2 = yty - 2.0 * m_eig @ proj + m_eig @ (eigvals * m_eig)
    resid2 = max(resid2, 0.0)
    e_m = 0.5 * beta * resid2 + 0.5 * alpha * m_eig @ m_eig
    log_ev = (
        0.5 * d * np.log(alpha)
        + 0.5 * n * np.log(beta)
        - e_m
        - 0.5 * np.sum(np.log(a))
        - 0.5 * n * np.log(2.0 * np.pi)
    )
    return -float(log_ev)


@dataclass
class BayesianLinearRegression:
    """Bayesian linear regression with an analytic Gaussian posterior.

    Parameters
    ----------
    alpha
        Prior precision of the weights. ``None`` chooses it by evidence maximisation.
    beta
        Noise precision of the targets. ``None`` chooses it by evidence maximisation.
    center
        Subtract the mean training target before fitting (the offset is added back to
        predictions). Keeps a zero-mean prior sensible for energies far from zero.
    """

    alpha: float | None = None
    beta: float | None = None
    center: bool = True
    # Fitted state.
    alpha_: float = field(default=np.nan, init=False)
    beta_: float = field(default=np.nan, init=False)
    offset_: float = field(default=0.0, init=False)
    mean_: np.ndarray = field(default=None, init=False, repr=False)
    chol_: np.ndarray = field(default=None, init=False, repr=False)
    n_train_: int = field(default=0, init=False)
    _log_evidence: float = field(default=np.nan, init=False, repr=False)

    def fit(self, X: np.ndarray, y: np.ndarray) -> BayesianLinearRegression:
        """Fit the posterior (and hyperparameters unless fixed) to ``X``, ``y``.

        Parameters
        ----------
        X
            Design matrix, shape ``(n, d)``.
        y
            Targets, shape ``(n,)``.

        Returns
        -------
        BayesianLinearRegression
            ``self``, fitted.
        """
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise ValueError(f"X must be (n, d) and y (n,); got {X.shape} and {y.shape}")
        if X.shape[0] == 0:
            raise ValueError("cannot fit a surrogate to zero labels")
        n, d = X.shape
        self.offset_ = float(y.mean()) if self.center else 0.0
        yc = y - self.offset_
        xtx = X.T @ X
        xty = X.T @ yc
        eigvals, eigvecs = np.linalg.eigh(xtx)
        eigvals = np.clip(eigvals, 0.0, None)
        proj = eigvecs.T @ xty
        yty = float(yc @ yc)

        log_alpha, log_beta = self._optimise_hyperparameters(eigvals, proj, yty, n, yc)
        self.alpha_, self.beta_ = float(np.exp(log_alpha)), float(np.exp(log_beta))
        self._log_evidence = -_neg_log_evidence(
            np.array([log_alpha, log_beta]), eigvals, proj, yty, n
        )

        precision = self.alpha_ * np.eye(d) + self.beta_ * xtx
        self.chol_ = cholesky(precision, lower=True)
        self.mean_ = self.beta_ * cho_solve((self.chol_, True), xty)
        self.n_train_ = n
        return self

    def _optimise_hyperparameters(
        self, eigvals: np.ndarray, proj: np.ndarray, yty: float, n: int, yc: np.ndarray
    ) -> tuple[float, float]:
        fixed = [
            None if self.alpha is None else np.log(self.alpha),
            None if self.beta is None else np.log(self.beta),
        ]
        if all(v is not None for v in fixed):
            return fixed[0], fixed[1]
        free = [i for i, v in enumerate(fixed) if v is None]
        bounds = [(LOG_ALPHA_BOUNDS, LOG_BETA_BOUNDS)[i] for i in free]

        def objective(theta: np.ndarray) -> float:
            params = np.array([v if v is not None else 0.0 for v in fixed])
            params[free] = theta
            return _neg_log_evidence(params, eigvals, proj, yty, n)

        # A few starts: the evidence can be flat in one direction for tiny data sets.
        var = max(float(np.var(yc)), 1e-8)
        starts_a = [np.log(1.0 / var), np.log(1.0)]
        starts_b = [np.log(10.0 / var), np.log(1e4)]
        best = None
        for sa in starts_a:
            for sb in starts_b:
                x0 = np.array([(sa, sb)[i] for i in free])
                x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
                res = minimize(objective, x0, method="L-BFGS-B", bounds=bounds)
                if best is None or res.fun < best.fun:
                    best = res
        out = [v if v is not None else 0.0 for v in fixed]
        for j, i in enumerate(free):
            out[i] = float(best.x[j])
        return out[0], out[1]

    def _check_fitted(self) -> None:
        if self.mean_ is None:
            raise RuntimeError("surrogate is not fitted; call fit() first")

    @property
    def covariance_(self) -> np.ndarray:
        """Posterior covariance of the weights, ``A^-1`` (formed only on request)."""
        self._check_fitted()
        return cho_solve((self.chol_, True), np.eye(self.chol_.shape[0]))

    def predict(self, X: np.ndarray) -> Prediction:
        """Predictive mean and the epistemic and aleatoric variances at ``X``."""
        self._check_fitted()
        X = np.atleast_2d(np.asarray(X, dtype=float))
        mean = X @ self.mean_ + self.offset_
        v = solve_triangular(self.chol_, X.T, lower=True)  # L^-1 X^T
        epistemic = (v * v).sum(axis=0)
        aleatoric = np.full(X.shape[0], 1.0 / self.beta_)
        return Prediction(mean, epistemic, aleatoric)

    def log_evidence(self) -> float:
        """Log marginal likelihood of the training targets at the fitted hyperparameters."""
        self._check_fitted()
        return self._log_evidence

    def to_dict(self) -> dict:
        """Hyperparameters and posterior as plain lists (for the ``models`` store)."""
        self._check_fitted()
        return {
            "kind": "bayesian_linear",
            "alpha": self.alpha_,
            "beta": self.beta_,
            "offset": self.offset_,
            "n_train": self.n_train_,
            "log_evidence": self._log_evidence,
            "mean": self.mean_.tolist(),
            "covariance": self.covariance_.tolist(),
        }


SURROGATES = {"bayesian_linear": BayesianLinearRegression}


def make_surrogate(kind: str, **kwargs) -> Surrogate:
    """Build a surrogate by its config name."""
    try:
        cls = SURROGATES[kind]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {kind!r}; choose one of {sorted(SURROGATES)}"
        ) from None
    return cls(**kwargs)
