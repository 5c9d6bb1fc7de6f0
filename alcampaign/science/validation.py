"""Pool-wide accuracy estimates that stay honest under active sampling (numpy/scipy).

A campaign stops on its estimate of how well the surrogate predicts *every* candidate,
but its labels were chosen by an acquisition rule, not at random: plain
cross-validation on them estimates the error where the rule looked (e.g. near the
hull for ``lower_confidence_bound``), not over the pool. Each estimator here returns a
point estimate of the pool RMSE and MAE with a ``level`` interval:

``cv``
    Plain k-fold cross-validation of the labels (the biased baseline).
``iwcv``
    Importance-weighted cross-validation (Sugiyama, Krauledat & Mueller, JMLR 8, 985,
    2007): each held-out residual is weighted by the density ratio pool/labelled at
    its features, estimated by a logistic-regression classifier of labelled against
    pool rows (Bickel, Brueckner & Scheffer, JMLR 10, 2137, 2009), flattened by a
    power ``0.5`` (Shimodaira, J. Stat. Plan. Inference 90, 227, 2000) to trade bias
    for variance.
``posterior``
    The expected squared error over the pool under the calibrated predictive: the
    labelled candidates' known fit residuals plus, for every unlabelled candidate,
    its predictive variance times the second moment of the held-out standardised
    residuals (so a heavy tail seen in cross-validation is carried over), taken from
    a Student t fitted to them and weighted by the pool/labelled density ratio. Its
    interval is that of the pool's *realised* error: the unlabelled candidates' errors
    share the error of the weights, so they are correlated and the pool MSE keeps a
    spread however many candidates there are (:func:`pool_error_spread`).
``audit``
    A random audit sample of the pool that no acquisition rule ever chooses and that
    is never trained on: the RMSE of the deployed model on it is unbiased for the pool.

Intervals are percentile bootstraps over the residuals the estimate is made from
(Efron & Tibshirani, 1993).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize

ESTIMATES = ("posterior", "iwcv", "cv", "audit")
AUDIT_RULE = "audit"  # the acquisition rule name of the audit sample
N_BOOTSTRAP = 2000


@dataclass
class AccuracyEstimate:
    """A pool-wide error estimate with its interval (energies in eV/atom).

    Attributes
    ----------
    method
        One of :data:`ESTIMATES`.
    rmse, rmse_low, rmse_high
        Point estimate of the pool RMSE and its ``level`` interval.
    mae, mae_low, mae_high
        The same for the mean absolute error.
    level
        Nominal coverage of the intervals.
    n
        Residuals the estimate rests on.
    """

    method: str
    rmse: float
    rmse_low: float
    rmse_high: float
    mae: float
    mae_low: float
    mae_high: float
    level: float
    n: int

    def to_dict(self) -> dict:
        """Plain dict (the campaign document's ``metrics['accuracy']``)."""
        return asdict(self)


def _bootstrap(
    stat: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    n: int,
    level: float,
    rng: np.random.Generator,
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """Point values and percentile intervals of a (rmse, mae) statistic of ``n`` cases.

    ``stat(idx)`` evaluates the statistic on each row of case indices ``idx``
    (``(B, n)``, with repeats) and returns two ``(B,)`` arrays.
    """
    point = stat(np.arange(n)[None, :])
    draws = np.array(stat(rng.integers(0, n, (N_BOOTSTRAP, n)))).T
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    return (
        (float(point[0][0]), float(point[1][0])),
        (float(lo[0]), float(hi[0])),
        (float(lo[1]), float(hi[1])),
    )


def _estimate(method, stat, n, level, rng) -> AccuracyEstimate:
    (rmse, mae), (r_lo, r_hi), (m_lo, m_hi) = _bootstrap(stat, n, level, rng)
    return AccuracyEstimate(method, float(rmse), r_lo, r_hi, float(mae), m_lo, m_hi, level, n)


def residual_estimate(
    residuals: np.ndarray,
    level: float,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    method: str = "cv",
) -> AccuracyEstimate:
    """RMSE and MAE of (weighted) held-out residuals, with bootstrap intervals.

    Used for ``cv`` (cross-validated residuals), ``iwcv`` (with importance weights) and
    ``audit`` (the audit sample's residuals).
    """
    r = np.asarray(residuals, dtype=float)
    if r.size == 0:
        raise ValueError(f"the {method} estimate needs at least one residual")
    w = np.ones(r.size) if weights is None else np.asarray(weights, dtype=float)

    def stat(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wi, ri = w[idx], r[idx]
        total = wi.sum(axis=1)
        return np.sqrt((wi * ri**2).sum(axis=1) / total), (wi * np.abs(ri)).sum(axis=1) / total

    return _estimate(method, stat, r.size, level, rng)


def student_t_scale2(z: np.ndarray, w: np.ndarray, dof: float, iters: int = 200) -> np.ndarray:
    """Weighted maximum-likelihood squared scale of a Student t with ``dof`` degrees of
    freedom, for each row of ``z`` (``(B, n)``, weights ``w`` alike).

    The EM fixed point ``s^2 = sum w u z^2 / sum w`` with ``u = (dof + 1) / (dof +
    z^2 / s^2)`` (Lange, Little & Taylor, JASA 84, 881, 1989), started at the weighted
    mean of ``z^2``.
    """
    total = w.sum(axis=1)
    s2 = np.maximum((w * z**2).sum(axis=1) / total, 1e-300)
    for _ in range(iters):
        u = (dof + 1.0) / (dof + z**2 / s2[:, None])
        s2 = np.maximum((w * u * z**2).sum(axis=1) / total, 1e-300)
    return s2


def _t_abs_mean(dof: float) -> float:
    """``E|T|`` of a standard Student t with ``dof > 1``."""
    from scipy.special import gammaln

    return float(
        2.0
        * np.sqrt(dof)
        * np.exp(gammaln((dof + 1) / 2) - gammaln(dof / 2))
        / (np.sqrt(np.pi) * (dof - 1))
    )


SPREADS = ("multivariate_t", "gaussian", "none")


def epistemic_eigenvalues(gram: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``R Sigma R^T``: how the weight error spreads over candidates.

    The epistemic errors ``R (w - m)`` of the candidates ``R`` under the posterior
    ``w ~ N(m, Sigma)`` have ``sum_j e_j^2 = sum_k lambda_k xi_k^2`` with ``xi_k`` iid
    standard normal and ``lambda_k`` these eigenvalues, those of ``Sigma^1/2 G
    Sigma^1/2`` with the Gram matrix ``G = R^T R`` (weight space: ``d x d``, whatever
    the number of candidates). Their sum is the sum of the candidates' epistemic
    variances.
    """
    C = np.asarray(covariance, dtype=float)
    c, V = np.linalg.eigh(0.5 * (C + C.T))
    half = V * np.sqrt(np.clip(c, 0.0, None))
    return np.clip(np.linalg.eigvalsh(half.T @ np.asarray(gram, dtype=float) @ half), 0.0, None)


def pool_error_spread(
    eigenvalues: np.ndarray,
    noise_var_sum: float,
    n_unlabelled: int,
    size: int,
    rng: np.random.Generator,
    spread: str = "multivariate_t",
    dof: float = np.inf,
) -> np.ndarray:
    """Draws of the unlabelled candidates' realised squared error over its expectation.

    ``Q = (sum_k lambda_k g_k xi_k^2 + noise) / (sum_k lambda_k + noise_var_sum)`` with
    ``xi_k`` standard normal: the weight error along each principal direction
    (:func:`epistemic_eigenvalues`); ``noise`` is the candidates' independent label
    noise, ``noise_var_sum * chi^2_n / n``. ``E[Q] = 1``, and ``Q`` keeps a spread of
    about ``sqrt(2 / k_eff)`` for ``k_eff = (sum lambda)^2 / sum lambda^2`` directions,
    however many candidates share them (on the tuning pools after 40 labels ``k_eff``
    was 3-17). ``spread``:

    * ``multivariate_t`` (``dof`` finite; with ``dof = inf`` it is ``gaussian``): the
      weight error is a multivariate t, one
      mixing ``g ~ (dof - 2) / chi^2_dof`` per draw (mean 1), as the posterior of the
      weights of a Bayesian linear model with an unknown noise scale is (Gelman et al.,
      *Bayesian Data Analysis*, 3rd ed., sec. 14.2); ``dof`` is that of the held-out
      residuals' Student t, so the heavy tail cross-validation saw reaches the interval;
    * ``gaussian``: ``g = 1``;
    * ``none``: ``Q = 1`` (the expected error's interval only, the former behaviour).
    """
    if spread not in SPREADS:
        raise ValueError(f"unknown spread {spread!r}; choose one of {SPREADS}")
    lam = np.asarray(eigenvalues, dtype=float)
    total = float(lam.sum()) + float(noise_var_sum)
    if spread == "none" or total <= 0:
        return np.ones(size)
    epi = (rng.standard_normal((size, lam.size)) ** 2) @ lam
    if spread == "multivariate_t" and np.isfinite(dof):
        epi = epi * (dof - 2.0) / rng.chisquare(dof, size)
    n = max(int(n_unlabelled), 1)
    noise = float(noise_var_sum) * rng.chisquare(n, size) / n
    return (epi + noise) / total


def posterior_estimate(
    fit_residuals: np.ndarray,
    unlabelled_std: np.ndarray,
    z_heldout: np.ndarray,
    level: float,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    moments: str = "student_t",
    eigenvalues: np.ndarray | None = None,
    spread: str = "multivariate_t",
) -> AccuracyEstimate:
    """Expected pool error under the calibrated predictive.

    ``MSE = (sum_labelled r_i^2 + m2 sum_unlabelled sigma_j^2) / N`` and
    ``MAE = (sum_labelled |r_i| + m1 sum_unlabelled sigma_j) / N``, with ``m2`` and
    ``m1`` the second moment and mean absolute value of the held-out standardised
    residuals ``z`` (1 and ``sqrt(2/pi)`` if they were exactly Gaussian):

    * ``moments="empirical"``: the (weighted) sample means of ``z^2`` and ``|z|``;
    * ``moments="student_t"``: those of a scaled Student t fitted to ``z`` by weighted
      maximum likelihood (:class:`~alcampaign.science.calibration.StudentTCalibration`;
      its degrees of freedom, at least 2.5, are kept in the bootstrap and the scale
      refitted: :func:`student_t_scale2`). With 30-60 heavy-tailed residuals the sample
      mean of ``z^2`` is set by the largest one or two; the fitted tail is steadier.

    With importance weights (pool over labelled density ratio, :func:`density_ratio`)
    the moments are those of the residuals the *pool* would give, not of the actively
    chosen labels (covariate-shift correction, Shimodaira 2000; Sugiyama et al. 2007).
    The interval bootstraps the held-out residuals (with their weights) and, given
    ``eigenvalues`` (:func:`epistemic_eigenvalues` of the unlabelled candidates), draws
    each bootstrap replicate's realised pool error (:func:`pool_error_spread`):
    ``MSE_b = (sum r^2 + m2_b Q_b sum sigma^2) / N`` and ``MAE_b = (sum |r| + m1_b
    sqrt(Q_b) sum sigma) / N`` (the absolute errors taken to scale with the realised
    root mean square). Without it, the interval is that of the *expected* error, which
    held the true pool RMSE far less often on the tuning pools (docs/benchmarks.md).
    The point estimate is the same either way.

    Parameters
    ----------
    fit_residuals
        Label minus the final model's mean at every labelled candidate.
    unlabelled_std
        Raw predictive standard deviation at every unlabelled candidate (the
        moments of ``z`` carry the recalibration).
    z_heldout
        Held-out residuals over their raw predictive standard deviations.
    weights
        Optional importance weight of each held-out residual.
    moments
        ``student_t`` or ``empirical``.
    eigenvalues
        Eigenvalues of the unlabelled candidates' epistemic covariance (raw scale), or
        ``None``.
    spread
        How the realised error spreads about its expectation (:data:`SPREADS`).
    """
    from alcampaign.science.calibration import StudentTCalibration

    r = np.asarray(fit_residuals, dtype=float)
    sd = np.asarray(unlabelled_std, dtype=float)
    z = np.asarray(z_heldout, dtype=float)
    if z.size == 0:
        raise ValueError("the posterior estimate needs held-out residuals")
    if moments not in ("student_t", "empirical"):
        raise ValueError(f"unknown moments {moments!r}; choose student_t or empirical")
    w = np.ones(z.size) if weights is None else np.asarray(weights, dtype=float)
    n_pool = r.size + sd.size
    ss_lab, sa_lab, var_un, sd_un = float(r @ r), float(np.abs(r).sum()), sd @ sd, sd.sum()
    dof = StudentTCalibration.fit_z(z, w).dof if moments == "student_t" else np.inf
    if eigenvalues is None:
        eigenvalues, spread = np.zeros(0), "none"
    lam = np.asarray(eigenvalues, dtype=float)
    noise_un = max(float(var_un - lam.sum()), 0.0)  # the unlabelled candidates' label noise
    # a child stream: drawing the spread leaves the caller's generator where it was, so
    # a campaign's later random choices (folds, tie-breaks) do not depend on it
    spread_rng = rng.spawn(1)[0]

    def stat(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zi, wi = z[idx], w[idx]
        total = wi.sum(axis=1)
        if np.isfinite(dof):
            s2 = student_t_scale2(zi, wi, dof)
            m2, m1 = s2 * dof / (dof - 2.0), np.sqrt(s2) * _t_abs_mean(dof)
        else:
            m2 = (wi * zi**2).sum(axis=1) / total
            m1 = (wi * np.abs(zi)).sum(axis=1) / total
        # the point estimate (one row) is the expectation; replicates draw the realised error
        q = (
            np.ones(1)
            if idx.shape[0] == 1
            else pool_error_spread(
                lam, noise_un, sd.size, idx.shape[0], spread_rng, spread, dof
            )
        )
        return (
            np.sqrt((ss_lab + m2 * q * var_un) / n_pool),
            (sa_lab + m1 * np.sqrt(q) * sd_un) / n_pool,
        )

    return _estimate("posterior", stat, z.size, level, rng)


def density_ratio(
    X: np.ndarray, labelled: np.ndarray, flatten: float = 0.5, ridge: float = 1.0
) -> np.ndarray:
    """Importance weights ``(p_pool / p_labelled)^flatten`` at the labelled rows.

    A logistic regression separates the labelled rows (class 1) from all pool rows
    (class 0) on standardised features; its odds give the density ratio
    ``p_pool(x) / p_labelled(x) ∝ P(0 | x) / P(1 | x)`` (Bickel et al., 2009). The
    weights are normalised to mean 1.

    Parameters
    ----------
    X
        Features of every candidate of the pool, ``(N, d)``.
    labelled
        Indices of the labelled rows.
    flatten
        Power on the ratio: 0 is plain CV, 1 the full correction.
    ridge
        L2 penalty of the classifier's weights (not its intercept).
    """
    X = np.asarray(X, dtype=float)
    labelled = np.asarray(labelled, dtype=int)
    sd = X.std(axis=0)
    keep = sd > 0
    Z = (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]
    Z = np.column_stack([np.ones(len(Z)), Z])
    A = np.vstack([Z[labelled], Z])
    t = np.r_[np.ones(labelled.size), np.zeros(len(Z))]

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        s = A @ b
        penalty = 0.5 * ridge * float(b[1:] @ b[1:])
        grad = A.T @ (0.5 * (1 + np.tanh(0.5 * s)) - t)
        grad[1:] += ridge * b[1:]
        return float(np.sum(np.logaddexp(0.0, s) - t * s)) + penalty, grad

    b = minimize(loss, np.zeros(Z.shape[1]), jac=True, method="L-BFGS-B").x
    w = np.exp(-flatten * (Z[labelled] @ b))
    return w / w.mean()


@dataclass
class HeldOut:
    """What the accuracy assessment needs, as arrays (energies in eV/atom).

    Attributes
    ----------
    y, cv_mean, cv_std
        Every labelled candidate's label and its cross-validated (out-of-fold) raw
        predictive mean and standard deviation.
    fit_mean
        The final model's mean at the labelled candidates.
    unlabelled_std
        The final model's raw predictive standard deviation at every unlabelled
        candidate (audit candidates included).
    unlabelled_eigenvalues
        :func:`epistemic_eigenvalues` of the unlabelled candidates under the final
        model's raw posterior (the ``posterior`` estimate's interval), or ``None``.
    weights
        Importance weights of the labelled candidates (``iwcv``), or ``None``.
    audit_residuals
        Audit labels minus the final model's mean at them (empty without an audit).
    """

    y: np.ndarray
    cv_mean: np.ndarray
    cv_std: np.ndarray
    fit_mean: np.ndarray
    unlabelled_std: np.ndarray
    weights: np.ndarray | None = None
    audit_residuals: np.ndarray | None = None
    unlabelled_eigenvalues: np.ndarray | None = None


def assess(
    data: HeldOut,
    method: str,
    level: float,
    rng: np.random.Generator,
    outlier_alpha: float = 0.05,
    folds: int = 5,
    calibration: str = "variance",
    weighted: bool = False,
    moments: str = "student_t",
    spread: str = "multivariate_t",
):
    """Recalibrate the predictive on held-out residuals and estimate the pool error.

    Parameters
    ----------
    calibration
        The recalibration fitted on the held-out standardised residuals (a key of
        :data:`alcampaign.science.calibration.CALIBRATIONS`).
    weighted
        Weight the held-out residuals by ``data.weights`` (the pool/labelled density
        ratio) in the recalibration, its cross-fitted metrics and the posterior
        estimate, so that they describe the pool rather than the actively chosen
        labels (weighted quantile recalibration under covariate shift: Tibshirani,
        Barber, Candes & Ramdas, NeurIPS 2019). ``iwcv`` always uses the weights.
    moments, spread
        How the ``posterior`` estimate takes the moments of the held-out residuals and
        spreads its interval (:func:`posterior_estimate`).

    Returns
    -------
    calibration, metrics
        The :class:`~alcampaign.science.calibration.Calibration` to apply to every
        prediction, and metrics: ``rmse``/``mae`` (the chosen estimate) with
        ``rmse_low``/``rmse_high``/``mae_low``/``mae_high``, ``cv_rmse``/``cv_mae``,
        calibration metrics (``ece`` of the recalibrated held-out residuals,
        cross-fitted; ``ece_uncalibrated``; ``miscalibration_area``; ``sharpness``;
        ``max_std_residual`` and its n-aware threshold; ``calibration_scale``, the
        factor on every standard deviation), and ``accuracy``: the estimate as a dict
        (which method, its interval).
    """
    from alcampaign.science.calibration import (
        calibration_metrics,
        cross_fitted_z,
        fit_calibration,
        standardized,
    )

    if method not in ESTIMATES:
        raise ValueError(f"unknown accuracy estimate {method!r}; choose one of {ESTIMATES}")
    z_raw = standardized(data.y, data.cv_mean, data.cv_std)
    if (weighted or method == "iwcv") and data.weights is None:
        raise ValueError("importance weighting needs HeldOut.weights (density_ratio)")
    weights = data.weights if weighted or method == "iwcv" else None
    cal = fit_calibration(calibration, z_raw, weights)
    z_cal = cross_fitted_z(z_raw, folds, rng, weights, calibration)
    metrics: dict = calibration_metrics(
        z_raw, z_cal, cal.std_factor * data.cv_std, outlier_alpha, weights
    )
    metrics["calibration_scale"] = cal.std_factor
    cv = residual_estimate(data.y - data.cv_mean, level, rng)
    if method == "cv":
        est = cv
    elif method == "iwcv":
        est = residual_estimate(data.y - data.cv_mean, level, rng, weights, "iwcv")
    elif method == "audit":
        if data.audit_residuals is None or np.size(data.audit_residuals) == 0:
            raise ValueError("the audit estimate needs audit labels (stopping.audit_size > 0)")
        est = residual_estimate(data.audit_residuals, level, rng, method="audit")
    else:
        est = posterior_estimate(
            data.y - data.fit_mean,
            data.unlabelled_std,
            z_raw,
            level,
            rng,
            weights,
            moments,
            data.unlabelled_eigenvalues,
            spread,
        )
    metrics.update(
        rmse=est.rmse,
        rmse_low=est.rmse_low,
        rmse_high=est.rmse_high,
        mae=est.mae,
        mae_low=est.mae_low,
        mae_high=est.mae_high,
        cv_rmse=cv.rmse,
        cv_mae=cv.mae,
        accuracy=est.to_dict(),
    )
    return cal, metrics


def audit_sample(
    n_pool: int, size: int, seed: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """The audit sample: ``size`` candidates drawn uniformly at random (own seed stream),
    outside ``exclude`` (e.g. the initial design)."""
    free = np.setdiff1d(np.arange(n_pool), [] if exclude is None else exclude)
    rng = np.random.default_rng([seed, 0xA0D17])
    return np.sort(rng.choice(free, size=min(size, free.size), replace=False))
