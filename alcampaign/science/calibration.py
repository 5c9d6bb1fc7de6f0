"""Calibration of Gaussian predictive distributions (pure numpy/scipy).

Measures
--------
For each nominal coverage ``p`` the central interval ``mean +/- z_p std`` (with
``z_p = Phi^-1((1 + p) / 2)``) should hold a fraction ``p`` of the observations.
Over the levels ``p = 0.05, 0.15, ..., 0.95``:

* :func:`expected_calibration_error`: mean ``|observed - p|`` (0 is calibrated);
* :func:`miscalibration_area`: mean ``observed - p``, signed: negative when the
  intervals hold too few observations (over-confident), positive when too many
  (under-confident); the ECE alone cannot tell the two apart;
* :func:`sharpness`: the mean predictive standard deviation (smaller is sharper; only
  meaningful next to a small ECE, cf. Gneiting, Balabdaoui & Raftery, JRSS B 69, 243,
  2007: "maximise sharpness subject to calibration").

Recalibration
-------------
:class:`VarianceCalibration` multiplies every predictive standard deviation by one
factor ``s`` fitted on held-out (cross-validated) residuals, so the recalibrated
predictive stays Gaussian and every reader (acquisition scores, domain flags, status,
report, dashboard, query) can use it as it used the raw one (variance scaling: Levi
et al., Sensors 22, 5540, 2022; Laves et al., MIDL 2020). ``s`` is chosen to minimise
the ECE of the held-out residuals, i.e. to match the quantiles of ``|z|`` to those of a
Gaussian, the criterion of quantile recalibration (Kuleshov, Fenner & Ermon, ICML
2018), restricted to one scale so that the predictive keeps its shape. Unlike the
maximum-likelihood scale ``sqrt(mean z^2)`` it is not dragged by a few heavy-tailed
residuals, which would widen every interval to cover them.

Outliers
--------
:func:`max_residual_threshold` is the level-``alpha`` threshold of the largest of
``n`` absolute standard-normal residuals (Sidak's correction, J. Am. Stat. Assoc. 62,
626, 1967): a calibrated model exceeds it with probability ``alpha`` whatever ``n``,
whereas the largest residual of ``n`` calibrated ones grows like ``sqrt(2 ln n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from alcampaign.science.surrogate import Prediction

LEVELS = np.arange(0.05, 1.0, 0.1)
# Scales searched by the recalibration: 1e-3 .. 1e3, 1.2% apart.
_LOG_SCALES = np.linspace(np.log(1e-3), np.log(1e3), 1201)
MIN_CALIBRATION_RESIDUALS = 5


def _levels(levels: np.ndarray | None) -> np.ndarray:
    return LEVELS if levels is None else np.asarray(levels, dtype=float)


def _weights(n: int, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative, one per residual, not all zero")
    return w / w.sum()


def standardized(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(y - mean) / std``; raises on a non-positive standard deviation."""
    std = np.asarray(std, dtype=float)
    if (std <= 0).any() or not np.isfinite(std).all():
        raise ValueError("predictive standard deviations must be positive and finite")
    return (np.asarray(y, dtype=float) - np.asarray(mean, dtype=float)) / std


def coverage(
    z: np.ndarray, levels: np.ndarray | None = None, weights: np.ndarray | None = None
) -> np.ndarray:
    """Observed (weighted) fraction of ``|z| <= z_p`` for each nominal coverage ``p``."""
    z = np.abs(np.asarray(z, dtype=float))
    p = _levels(levels)
    half = norm.ppf(0.5 + 0.5 * p)
    w = _weights(z.size, weights)
    return ((z[None, :] <= half[:, None]) * w[None, :]).sum(axis=1)


def ece_of_z(
    z: np.ndarray, levels: np.ndarray | None = None, weights: np.ndarray | None = None
) -> float:
    """Expected calibration error of standardised residuals (see the module docstring)."""
    p = _levels(levels)
    return float(np.mean(np.abs(coverage(z, p, weights) - p)))


def expected_calibration_error(
    y: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    levels: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> float:
    """Expected calibration error of Gaussian predictive distributions.

    Parameters
    ----------
    y, mean, std
        Observations and the predictive mean and standard deviation for each.
    levels
        Nominal coverages; default ``0.05, 0.15, ..., 0.95``.
    weights
        Optional weight of each observation (e.g. importance weights).
    """
    return ece_of_z(standardized(y, mean, std), levels, weights)


def miscalibration_area(
    y: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    levels: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> float:
    """Signed miscalibration: mean of observed minus nominal coverage.

    Negative: over-confident (intervals too narrow); positive: under-confident.
    """
    p = _levels(levels)
    return float(np.mean(coverage(standardized(y, mean, std), p, weights) - p))


def sharpness(std: np.ndarray) -> float:
    """Mean predictive standard deviation (the unit of ``std``)."""
    return float(np.mean(np.asarray(std, dtype=float)))


def max_residual_threshold(n: int, alpha: float = 0.05) -> float:
    """Threshold ``t`` with ``P(max_i |Z_i| > t) = alpha`` for ``n`` iid standard normals.

    Sidak: ``(2 Phi(t) - 1)^n = 1 - alpha``, so
    ``t = Phi^-1((1 + (1 - alpha)^(1/n)) / 2)``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return float(norm.ppf(0.5 + 0.5 * (1.0 - alpha) ** (1.0 / n)))


def fit_scale(
    z: np.ndarray, weights: np.ndarray | None = None, levels: np.ndarray | None = None
) -> float:
    """The factor ``s`` that minimises the ECE of ``z / s`` (grid search, 1.2% steps).

    The ECE is a step function of ``s``; of the best grid points the geometric middle
    of the first run of them is returned.
    """
    z = np.abs(np.asarray(z, dtype=float))
    p = _levels(levels)
    w = _weights(z.size, weights)
    half = norm.ppf(0.5 + 0.5 * p)
    # coverage at level j for scale s: sum_i w_i [z_i <= s h_j]; sort once, search.
    order = np.argsort(z)
    zs, cw = z[order], np.concatenate([[0.0], np.cumsum(w[order])])
    scales = np.exp(_LOG_SCALES)
    idx = np.searchsorted(zs, scales[:, None] * half[None, :], side="right")
    loss = np.mean(np.abs(cw[idx] - p[None, :]), axis=1)
    best = np.flatnonzero(loss <= loss.min() + 1e-12)
    run_end = best[0]
    while run_end + 1 < len(loss) and loss[run_end + 1] <= loss.min() + 1e-12:
        run_end += 1
    return float(np.exp(0.5 * (_LOG_SCALES[best[0]] + _LOG_SCALES[run_end])))


@dataclass
class VarianceCalibration:
    """One factor on every predictive standard deviation, fitted on held-out residuals.

    Attributes
    ----------
    scale
        Multiplier of the standard deviation (the variance is multiplied by its square);
        1 is the model as fitted.
    n
        Held-out residuals it was fitted on (0: not fitted, the identity).
    """

    scale: float = 1.0
    n: int = 0

    @classmethod
    def fit(
        cls, y: np.ndarray, mean: np.ndarray, std: np.ndarray, weights: np.ndarray | None = None
    ) -> VarianceCalibration:
        """Fit on held-out observations and their predictive means and deviations.

        Fewer than ``MIN_CALIBRATION_RESIDUALS`` residuals leave the model as it is.
        """
        z = standardized(y, mean, std)
        if z.size < MIN_CALIBRATION_RESIDUALS:
            return cls(1.0, int(z.size))
        return cls(fit_scale(z, weights), int(z.size))

    def apply(self, prediction: Prediction) -> Prediction:
        """The recalibrated prediction (both variance parts scaled by ``scale**2``)."""
        s2 = self.scale**2
        return Prediction(
            prediction.mean, prediction.epistemic_var * s2, prediction.aleatoric_var * s2
        )

    def to_dict(self) -> dict:
        """Plain dict for the model document."""
        return {"kind": "variance_scale", "scale": float(self.scale), "n": int(self.n)}

    @classmethod
    def from_dict(cls, d: dict | None) -> VarianceCalibration:
        """Inverse of :meth:`to_dict`; ``None`` (an older model document) is the identity."""
        if not d:
            return cls()
        if d.get("kind", "variance_scale") != "variance_scale":
            raise ValueError(f"unknown calibration kind {d.get('kind')!r}")
        return cls(float(d["scale"]), int(d.get("n", 0)))


def cross_fitted_z(
    z: np.ndarray, k: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """Recalibrated residuals, each scaled by a factor fitted without it (k folds).

    The ECE of these is an honest estimate of the recalibrated model's ECE, where the
    ECE of ``z / fit_scale(z)`` would be optimistic (fitted and judged on the same data).
    """
    z = np.asarray(z, dtype=float)
    w = np.ones(z.size) if weights is None else np.asarray(weights, dtype=float)
    out = np.empty_like(z)
    k = max(2, min(k, z.size))
    for fold in np.array_split(rng.permutation(z.size), k):
        train = np.ones(z.size, dtype=bool)
        train[fold] = False
        s = fit_scale(z[train], w[train]) if train.sum() >= MIN_CALIBRATION_RESIDUALS else 1.0
        out[fold] = z[fold] / s
    return out


def calibration_metrics(
    z_raw: np.ndarray, z_calibrated: np.ndarray, std_calibrated: np.ndarray, alpha: float = 0.05
) -> dict[str, float]:
    """ECE (raw and recalibrated), signed miscalibration area, sharpness, largest
    standardised residual and its n-aware threshold, of held-out residuals.

    ``z_raw`` are the held-out residuals over the model's own deviations, ``z_calibrated``
    over the recalibrated ones (cross-fitted), ``std_calibrated`` the recalibrated
    deviations (for the sharpness).
    """
    p = LEVELS
    zc = np.asarray(z_calibrated, dtype=float)
    return {
        "ece": ece_of_z(zc),
        "ece_uncalibrated": ece_of_z(z_raw),
        "miscalibration_area": float(np.mean(coverage(zc, p) - p)),
        "sharpness": sharpness(std_calibrated),
        "max_std_residual": float(np.max(np.abs(zc))),
        "max_std_residual_threshold": max_residual_threshold(zc.size, alpha),
    }
