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
Each recalibration (:data:`CALIBRATIONS`) is fitted on held-out (cross-validated)
standardised residuals and replaces the raw standardised predictive ``N(0, 1)`` of
every candidate by one distribution ``Z'`` (:class:`Calibration`); every reader
(acquisition scores, domain flags, status, report, dashboard, query) gets the
moment-matched standard deviation, and calibration is judged with ``Z'``'s own
intervals (:meth:`Calibration.normalise`):

* :class:`VarianceCalibration` (``variance``, the default): one factor ``s`` on every
  standard deviation, so the predictive stays Gaussian (variance scaling: Levi et al.,
  Sensors 22, 5540, 2022; Laves et al., MIDL 2020). ``s`` minimises the ECE of the
  held-out residuals, i.e. matches the quantiles of ``|z|`` to those of a Gaussian, the
  criterion of quantile recalibration (Kuleshov, Fenner & Ermon, ICML 2018) restricted
  to one scale. Unlike the maximum-likelihood scale ``sqrt(mean z^2)`` it is not dragged
  by a few heavy-tailed residuals, which would widen every interval to cover them.
* :class:`StudentTCalibration` (``student_t``): a scaled Student t with its degrees of
  freedom fitted by maximum likelihood: heavy tails.
* :class:`IsotonicCalibration` (``isotonic``): Kuleshov et al.'s isotonic
  recalibration of the (folded) CDF: any shape.

Held-out residuals of actively chosen labels describe where the rule looked, not the
pool: every fit takes optional weights, the pool/labelled density ratio in the
controller (:func:`alcampaign.science.validation.density_ratio`; weighted
recalibration under covariate shift as in weighted conformal prediction, Tibshirani,
Barber, Candes & Ramdas, NeurIPS 2019).

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


class Calibration:
    """A recalibration of Gaussian predictives ``N(mean, std^2)`` fitted on held-out
    standardised residuals ``z = (y - mean) / std``.

    Every recalibration here keeps each candidate's mean and replaces the raw
    standardised predictive ``N(0, 1)`` by one distribution ``Z'`` shared by all
    candidates (symmetric about 0), so the recalibrated predictive of a candidate is
    ``mean + std Z'``. Readers that take a Gaussian (acquisition scores, domain flags,
    status, report, dashboard, query) get its moment-matched standard deviation
    ``std_factor * std`` (:meth:`apply`); calibration is judged with ``Z'``'s own
    central intervals through :meth:`normalise`, which maps a raw ``z`` to the standard
    normal deviate of the same recalibrated tail probability (the probability integral
    transform, Dawid, JRSS A 147, 278, 1984), so every Gaussian measure of this module
    (ECE, signed area, the max-residual threshold) applies unchanged.
    """

    kind = "none"
    n: int = 0

    @property
    def std_factor(self) -> float:
        """Standard deviation of ``Z'``: the recalibrated std over the raw one."""
        raise NotImplementedError

    @property
    def scale(self) -> float:
        """Alias of :attr:`std_factor` (the multiplier of every standard deviation)."""
        return self.std_factor

    def tail(self, a: np.ndarray) -> np.ndarray:
        """``P(|Z'| > a)`` for raw standardised half-widths ``a >= 0``."""
        raise NotImplementedError

    def normalise(self, z: np.ndarray) -> np.ndarray:
        """Raw standardised residuals mapped to standard normal deviates of the same
        recalibrated two-sided tail probability (sign kept)."""
        z = np.asarray(z, dtype=float)
        t = np.clip(self.tail(np.abs(z)), 1e-300, 1.0)
        return np.sign(z) * norm.isf(0.5 * t)

    def apply(self, prediction: Prediction) -> Prediction:
        """The recalibrated prediction (both variance parts times ``std_factor**2``)."""
        s2 = self.std_factor**2
        return Prediction(
            prediction.mean, prediction.epistemic_var * s2, prediction.aleatoric_var * s2
        )

    def to_dict(self) -> dict:
        """Plain dict for the model document (``kind`` names the class)."""
        raise NotImplementedError


@dataclass
class VarianceCalibration(Calibration):
    """One factor on every predictive standard deviation, fitted on held-out residuals.

    ``Z' = scale N(0, 1)``: the recalibrated predictive stays Gaussian.

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
    kind = "variance"

    @property
    def std_factor(self) -> float:
        return self.scale

    @classmethod
    def fit(
        cls, y: np.ndarray, mean: np.ndarray, std: np.ndarray, weights: np.ndarray | None = None
    ) -> VarianceCalibration:
        """Fit on held-out observations and their predictive means and deviations.

        Fewer than ``MIN_CALIBRATION_RESIDUALS`` residuals leave the model as it is.
        """
        return cls.fit_z(standardized(y, mean, std), weights)

    @classmethod
    def fit_z(cls, z: np.ndarray, weights: np.ndarray | None = None) -> VarianceCalibration:
        """Fit on raw standardised held-out residuals (the ECE-minimising scale)."""
        z = np.asarray(z, dtype=float)
        if z.size < MIN_CALIBRATION_RESIDUALS:
            return cls(1.0, int(z.size))
        return cls(fit_scale(z, weights), int(z.size))

    def tail(self, a: np.ndarray) -> np.ndarray:
        return 2.0 * norm.sf(np.asarray(a, dtype=float) / self.scale)

    def normalise(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=float) / self.scale

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


# Degrees of freedom searched by the Student-t recalibration (> 2: finite variance).
_T_DOFS = np.array([2.5, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 1e3])


@dataclass
class StudentTCalibration(Calibration):
    """``Z' = scale T_dof``: a heavy-tailed recalibrated predictive.

    The scale and the degrees of freedom maximise the (weighted) likelihood of the
    held-out standardised residuals under a scaled Student t (the t as a Gaussian scale
    mixture: Lange, Little & Taylor, JASA 84, 881, 1989), ``dof`` on a grid from 2.5 to
    1000 (above 2 so that the variance, which readers of the moment-matched Gaussian
    need, is finite) and the scale by a bounded 1-D search for each.
    """

    scale_t: float = 1.0
    dof: float = 1e3
    n: int = 0
    kind = "student_t"

    @property
    def std_factor(self) -> float:
        return float(self.scale_t * np.sqrt(self.dof / (self.dof - 2.0)))

    @classmethod
    def fit_z(cls, z: np.ndarray, weights: np.ndarray | None = None) -> StudentTCalibration:
        """Maximum-likelihood ``(scale, dof)`` of raw standardised held-out residuals."""
        from scipy.optimize import minimize_scalar
        from scipy.stats import t as student

        z = np.asarray(z, dtype=float)
        if z.size < MIN_CALIBRATION_RESIDUALS:
            return cls(1.0, 1e3, int(z.size))
        w = _weights(z.size, weights)
        best = (np.inf, 1.0, 1e3)
        for dof in _T_DOFS:

            def nll(log_s: float, dof: float = dof) -> float:
                return -float(w @ student.logpdf(z, dof, scale=np.exp(log_s)))

            r = minimize_scalar(nll, bounds=(np.log(1e-3), np.log(1e3)), method="bounded")
            if r.fun < best[0]:
                best = (r.fun, float(np.exp(r.x)), float(dof))
        return cls(best[1], best[2], int(z.size))

    def tail(self, a: np.ndarray) -> np.ndarray:
        from scipy.stats import t as student

        return 2.0 * student.sf(np.asarray(a, dtype=float) / self.scale_t, self.dof)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "scale": float(self.scale_t),
            "dof": float(self.dof),
            "n": int(self.n),
        }


@dataclass
class IsotonicCalibration(Calibration):
    """Quantile recalibration of the central intervals (Kuleshov, Fenner & Ermon, ICML
    2018), on the folded probability integral transform ``u = 2 Phi(|z|) - 1``.

    Kuleshov et al. fit an isotonic regression ``R`` of the empirical CDF of the
    held-out PIT values against the PIT values; on the fitting residuals themselves
    that empirical CDF is already monotone, so the isotonic (pool-adjacent-violators)
    fit is the empirical CDF itself, here with plotting positions ``k / (n + 1)``
    (weighted: cumulative weight times ``n / (n + 1)``) and linear interpolation, with
    ``R(0) = 0`` and ``R(1) = 1``. The recalibrated ``|Z'|`` has ``P(|Z'| <= a) =
    R(2 Phi(a) - 1)``: between the largest residual and infinity it keeps the mass
    ``1 / (n + 1)`` with the raw Gaussian's tail shape. The moments of ``Z'`` follow
    in closed form segment by segment.

    Attributes
    ----------
    knots
        Sorted distinct ``|z|`` of the fitting residuals.
    tails
        ``1 - R`` at each knot (non-increasing).
    """

    knots: tuple[float, ...] = ()
    tails: tuple[float, ...] = ()
    n: int = 0
    kind = "isotonic"

    @classmethod
    def fit_z(cls, z: np.ndarray, weights: np.ndarray | None = None) -> IsotonicCalibration:
        """The recalibration map of raw standardised held-out residuals."""
        z = np.abs(np.asarray(z, dtype=float))
        if z.size < MIN_CALIBRATION_RESIDUALS:
            return cls((), (), int(z.size))
        w = _weights(z.size, weights)
        order = np.argsort(z, kind="stable")
        a, cdf = z[order], np.cumsum(w[order]) * z.size / (z.size + 1)
        last = np.r_[a[1:] != a[:-1], True]  # ties: the cumulative weight of the last
        a, cdf = a[last], cdf[last]
        return cls(tuple(map(float, a)), tuple(map(float, 1.0 - cdf)), int(z.size))

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Interpolation nodes in ``v = 2 sf(a)`` (increasing) and the tail there."""
        v = 2.0 * norm.sf(np.asarray(self.knots, dtype=float))
        return np.r_[0.0, v[::-1], 1.0], np.r_[0.0, np.asarray(self.tails)[::-1], 1.0]

    def tail(self, a: np.ndarray) -> np.ndarray:
        if not self.knots:
            return 2.0 * norm.sf(np.asarray(a, dtype=float))
        v, t = self._grid()
        return np.interp(2.0 * norm.sf(np.asarray(a, dtype=float)), v, t)

    def _moment(self, power: int) -> float:
        """``E|Z'|^power`` (1 or 2), exactly for the piecewise-linear map."""
        if not self.knots:
            return 1.0 if power == 2 else float(np.sqrt(2.0 / np.pi))
        a = np.r_[0.0, np.asarray(self.knots), np.inf]
        mass = -np.diff(np.r_[1.0, np.asarray(self.tails), 0.0])  # P(segment)
        dv = 2.0 * (norm.sf(a[:-1]) - norm.sf(a[1:]))  # P_raw(segment)
        if power == 2:  # int a^2 2 phi(a) da = 2 [Phi(a) - a phi(a)]
            finite = np.where(np.isinf(a), 0.0, a)
            f = 2.0 * (norm.cdf(a) - finite * norm.pdf(finite))
        else:  # int a 2 phi(a) da = -2 phi(a)
            f = -2.0 * norm.pdf(a)
        seg = np.diff(f)
        ok = dv > 0
        return float(np.sum(mass[ok] / dv[ok] * seg[ok]))

    @property
    def std_factor(self) -> float:
        return float(np.sqrt(self._moment(2)))

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "knots": list(self.knots),
            "tails": list(self.tails),
            "n": int(self.n),
        }


CALIBRATIONS: dict[str, type] = {
    "variance": VarianceCalibration,
    "student_t": StudentTCalibration,
    "isotonic": IsotonicCalibration,
}


def fit_calibration(
    kind: str, z: np.ndarray, weights: np.ndarray | None = None
) -> Calibration:
    """Fit the recalibration ``kind`` (a key of :data:`CALIBRATIONS`) on raw
    standardised held-out residuals."""
    if kind not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {kind!r}; choose one of {sorted(CALIBRATIONS)}")
    return CALIBRATIONS[kind].fit_z(z, weights)


def calibration_from_dict(d: dict | None) -> Calibration:
    """A stored recalibration (:meth:`Calibration.to_dict`); ``None`` is the identity."""
    if not d or d.get("kind", "variance_scale") == "variance_scale":
        return VarianceCalibration.from_dict(d)
    if d["kind"] == "student_t":
        return StudentTCalibration(float(d["scale"]), float(d["dof"]), int(d.get("n", 0)))
    if d["kind"] == "isotonic":
        return IsotonicCalibration(
            tuple(map(float, d["knots"])), tuple(map(float, d["tails"])), int(d.get("n", 0))
        )
    raise ValueError(f"unknown calibration kind {d['kind']!r}")


def cross_fitted_z(
    z: np.ndarray,
    k: int,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    kind: str = "variance",
) -> np.ndarray:
    """Recalibrated residuals, each normalised by a recalibration fitted without it
    (k folds; :meth:`Calibration.normalise`).

    The ECE of these is an honest estimate of the recalibrated model's ECE, where the
    ECE of residuals recalibrated by a map fitted on them would be optimistic.
    """
    z = np.asarray(z, dtype=float)
    w = np.ones(z.size) if weights is None else np.asarray(weights, dtype=float)
    out = np.empty_like(z)
    k = max(2, min(k, z.size))
    for fold in np.array_split(rng.permutation(z.size), k):
        train = np.ones(z.size, dtype=bool)
        train[fold] = False
        cal = fit_calibration(kind, z[train], w[train])
        out[fold] = cal.normalise(z[fold])
    return out


def calibration_metrics(
    z_raw: np.ndarray,
    z_calibrated: np.ndarray,
    std_calibrated: np.ndarray,
    alpha: float = 0.05,
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """ECE (raw and recalibrated), signed miscalibration area, sharpness, largest
    standardised residual and its n-aware threshold, of held-out residuals.

    ``z_raw`` are the held-out residuals over the model's own deviations,
    ``z_calibrated`` the recalibrated ones (cross-fitted and normalised:
    :func:`cross_fitted_z`), ``std_calibrated`` the recalibrated deviations (for the
    sharpness); ``weights`` (e.g. importance weights) weight the coverages.
    """
    p = LEVELS
    zc = np.asarray(z_calibrated, dtype=float)
    return {
        "ece": ece_of_z(zc, weights=weights),
        "ece_uncalibrated": ece_of_z(z_raw, weights=weights),
        "miscalibration_area": float(np.mean(coverage(zc, p, weights) - p)),
        "sharpness": sharpness(std_calibrated),
        "max_std_residual": float(np.max(np.abs(zc))),
        "max_std_residual_threshold": max_residual_threshold(zc.size, alpha),
    }
