"""Domain of applicability: is a candidate inside what the model was trained on?

Two measures relative to the training features ``X`` (pure numpy/scipy):

* **Mahalanobis distance** ``sqrt((x - mu)^T C^+ (x - mu))`` to the training mean under
  the training covariance (pseudo-inverse: constant columns such as the cluster-vector
  zerolet carry no spread). Flag above ``sqrt(chi2_{q}(rank))`` by default.
* **Leverage** ``h(x) = x^T (X^T X)^+ x``; for a training point it is the diagonal of
  the hat matrix ``X (X^T X)^+ X^T``. Values above 1 mean extrapolation; the usual
  warning limit is ``3 p / n`` with ``p`` the rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2


def _pinv_sym(M: np.ndarray, rcond: float = 1e-10) -> tuple[np.ndarray, int]:
    w, V = np.linalg.eigh(M)
    keep = w > rcond * max(w.max(), 0.0) if w.size else w > 0
    inv = (V[:, keep] / w[keep]) @ V[:, keep].T
    return inv, int(keep.sum())


def _regularised(M: np.ndarray, ridge: float) -> np.ndarray:
    scale = float(np.mean(np.diag(M))) if M.size else 0.0
    return M + ridge * max(scale, 1e-12) * np.eye(M.shape[0])


@dataclass
class ApplicabilityDomain:
    """Mahalanobis distance and leverage relative to a training set.

    Parameters
    ----------
    mahalanobis_threshold
        Flag above this distance; ``None``: ``sqrt`` of the chi-square ``quantile`` with
        as many degrees of freedom as the rank of the training covariance.
    leverage_threshold
        Flag above this leverage; ``None``: ``3 p / n``.
    quantile
        Quantile of the default Mahalanobis threshold.
    ridge
        If > 0, add ``ridge`` times the mean diagonal to the covariance and the Gram
        matrix before inverting (instead of a pseudo-inverse), so that a direction the
        training set never explored counts as far away rather than being ignored. The
        pseudo-inverse (``ridge=0``) projects such directions out, which is right for
        constant columns but blind to genuinely new environments.
    """

    mahalanobis_threshold: float | None = None
    leverage_threshold: float | None = None
    quantile: float = 0.99
    ridge: float = 0.0

    def fit(self, X: np.ndarray) -> ApplicabilityDomain:
        """Learn the training mean, covariance and Gram pseudo-inverses."""
        X = np.asarray(X, dtype=float)
        n = X.shape[0]
        self.mean_ = X.mean(axis=0)
        cov = (
            np.cov(X.T, ddof=1).reshape(X.shape[1], X.shape[1])
            if n > 1
            else np.zeros((X.shape[1], X.shape[1]))
        )
        gram = X.T @ X
        if self.ridge > 0:
            cov = _regularised(cov, self.ridge)
            gram = _regularised(gram, self.ridge)
        self.cov_pinv_, self.cov_rank_ = _pinv_sym(cov)
        self.gram_pinv_, self.rank_ = _pinv_sym(gram)
        self.n_ = n
        self.mahalanobis_limit_ = self.mahalanobis_threshold or float(
            np.sqrt(chi2.ppf(self.quantile, max(self.cov_rank_, 1)))
        )
        self.leverage_limit_ = self.leverage_threshold or 3.0 * self.rank_ / max(n, 1)
        return self

    def mahalanobis(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to the training distribution."""
        D = np.asarray(X, dtype=float) - self.mean_
        return np.sqrt(np.maximum(((D @ self.cov_pinv_) * D).sum(axis=1), 0.0))

    def leverage(self, X: np.ndarray) -> np.ndarray:
        """Leverage ``x^T (X^T X)^+ x`` of each row."""
        X = np.asarray(X, dtype=float)
        return ((X @ self.gram_pinv_) * X).sum(axis=1)

    def assess(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Both measures and the flag (either above its limit) for each row."""
        m, h = self.mahalanobis(X), self.leverage(X)
        return {
            "mahalanobis": m,
            "leverage": h,
            "flagged": (m > self.mahalanobis_limit_) | (h > self.leverage_limit_),
        }
