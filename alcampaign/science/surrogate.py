"""Bayesian linear surrogate models (pure numpy/scipy).

The model is linear in basis functions, ``E = sum_k w_k f_k``. Each observation row is
either an **energy row** (features of a structure, target an energy) or a **force row**
(minus the gradient of the features with respect to one atomic coordinate, target that
force component). Rows of kind ``g`` carry Gaussian noise of precision ``beta_g`` (one
for energies, one for forces) and an optional weight ``s`` (a row of weight ``s`` counts
``s`` times; the bootstrap committee uses Poisson weights). The prior is
``w ~ N(0, alpha^-1 I)``. The posterior is Gaussian:

    A = alpha I + sum_g beta_g X_g^T S_g X_g          (posterior precision)
    m = A^-1 sum_g beta_g X_g^T S_g (y_g - y0 [g is energy])   (posterior mean)

``y0`` is a constant offset (the weighted mean energy target) that keeps a zero-mean
prior sensible for energies far from zero; force rows are unaffected by it. Everything
goes through a Cholesky factor of ``A``; no inverse is formed unless asked for.

The model keeps only sufficient statistics (``X^T S X``, ``X^T S y``, ...), so labels can
be added with :meth:`BayesianLinearRegression.update` as rank-k Cholesky updates at fixed
hyperparameters, which equals a refit to round-off; :meth:`optimize_hyperparameters`
re-maximises the evidence from the same statistics without the raw data.

A prediction separates the two kinds of uncertainty:

* epistemic variance ``x^T A^-1 x`` (what more data would remove), and
* aleatoric variance ``1 / beta_g`` (noise the model cannot remove).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize

ENERGY, FORCE = 0, 1
KINDS = (ENERGY, FORCE)

# Bounds on log(alpha) and log(beta). beta = 1/sigma^2: for energies (eV/atom) from
# sigma = 0.1 meV/atom to 3 eV/atom.
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

    def subset(self, index: np.ndarray) -> Prediction:
        """The prediction at a subset of the inputs."""
        return Prediction(self.mean[index], self.epistemic_var[index], self.aleatoric_var[index])


class Surrogate(Protocol):
    """The interface every surrogate offers to the controller and the rules."""

    def fit(self, X: np.ndarray, y: np.ndarray, kind: np.ndarray | None = None) -> Surrogate: ...

    def update(self, X: np.ndarray, y: np.ndarray, kind: np.ndarray | None = None) -> Surrogate: ...

    def predict(self, X: np.ndarray, kind: int = ENERGY) -> Prediction: ...

    def log_evidence(self) -> float: ...

    def noise_variance(self, kind: int = ENERGY) -> float: ...

    @property
    def covariance_(self) -> np.ndarray: ...

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, d: dict) -> Surrogate: ...


def _as_rows(X, y, kind, weight):
    X = np.atleast_2d(np.asarray(X, dtype=float))
    y = np.asarray(y, dtype=float).reshape(-1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X must be (n, d) and y (n,); got {X.shape} and {y.shape}")
    kind = np.zeros(len(y), dtype=int) if kind is None else np.asarray(kind, dtype=int)
    weight = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    if kind.shape != y.shape or weight.shape != y.shape:
        raise ValueError("kind and weight must have one entry per row")
    if not np.isin(kind, KINDS).all():
        raise ValueError("kind must be 0 (energy row) or 1 (force row)")
    return X, y, kind, weight


def chol_update(L: np.ndarray, x: np.ndarray) -> None:
    """In-place rank-one update of a lower Cholesky factor: ``L L^T + x x^T``.

    O(d^2); numerically stable (hyperbolic rotations are not needed for an update).
    """
    x = x.astype(float, copy=True)
    d = x.size
    for k in range(d):
        r = np.hypot(L[k, k], x[k])
        c, s = r / L[k, k], x[k] / L[k, k]
        L[k, k] = r
        if k + 1 < d:
            L[k + 1 :, k] = (L[k + 1 :, k] + s * x[k + 1 :]) / c
            x[k + 1 :] = c * x[k + 1 :] - s * L[k + 1 :, k]


@dataclass
class BayesianLinearRegression:
    """Bayesian linear regression on energy and force rows, analytic posterior.

    Parameters
    ----------
    alpha
        Prior precision of the weights. ``None``: evidence maximisation.
    beta
        Noise precision of energy rows. ``None``: evidence maximisation.
    beta_force
        Noise precision of force rows. ``None``: evidence maximisation (when force rows
        exist).
    center
        Subtract the (weighted) mean energy target before fitting; it is added back to
        energy predictions.
    """

    alpha: float | None = None
    beta: float | None = None
    beta_force: float | None = None
    center: bool = True
    alpha_: float = field(default=np.nan, init=False)
    betas_: np.ndarray = field(default=None, init=False, repr=False)
    offset_: float = field(default=0.0, init=False)
    mean_: np.ndarray = field(default=None, init=False, repr=False)
    chol_: np.ndarray = field(default=None, init=False, repr=False)
    _stats: dict = field(default=None, init=False, repr=False)
    _log_evidence: float = field(default=np.nan, init=False, repr=False)
    # Set only by from_dict (a stored posterior without its sufficient statistics).
    _covariance: np.ndarray = field(default=None, init=False, repr=False)
    _n_train: int = field(default=0, init=False, repr=False)

    # -- sufficient statistics ---------------------------------------------------

    def _empty_stats(self, d: int) -> dict:
        return {
            "G": np.zeros((2, d, d)),  # X_g^T S X_g
            "b": np.zeros((2, d)),  # X_g^T S y_g
            "yy": np.zeros(2),  # y_g^T S y_g
            "n": np.zeros(2),  # sum of weights
            "sx": np.zeros(d),  # X_E^T S 1
            "sy": 0.0,  # 1^T S y_E
        }

    def _accumulate(self, X, y, kind, weight) -> None:
        st = self._stats
        for g in KINDS:
            rows = kind == g
            if not rows.any():
                continue
            Xg, yg, wg = X[rows], y[rows], weight[rows]
            st["G"][g] += (Xg * wg[:, None]).T @ Xg
            st["b"][g] += Xg.T @ (wg * yg)
            st["yy"][g] += float(wg @ (yg * yg))
            st["n"][g] += float(wg.sum())
            if g == ENERGY:
                st["sx"] += Xg.T @ wg
                st["sy"] += float(wg @ yg)

    def _centered(self) -> tuple[np.ndarray, np.ndarray, float]:
        """``b`` and ``yy`` per kind with the energy offset removed."""
        st = self._stats
        c = st["sy"] / st["n"][ENERGY] if (self.center and st["n"][ENERGY] > 0) else 0.0
        b = st["b"].copy()
        yy = st["yy"].copy()
        b[ENERGY] = b[ENERGY] - c * st["sx"]
        yy[ENERGY] = yy[ENERGY] - 2 * c * st["sy"] + c * c * st["n"][ENERGY]
        return b, np.maximum(yy, 0.0), c

    # -- evidence ----------------------------------------------------------------

    def _neg_log_evidence(self, alpha: float, betas: np.ndarray) -> float:
        st = self._stats
        b, yy, _ = self._centered()
        d = st["G"].shape[1]
        A = alpha * np.eye(d) + np.tensordot(betas, st["G"], axes=1)
        try:
            L = cholesky(A, lower=True)
        except np.linalg.LinAlgError:
            return np.inf
        rhs = betas @ b
        z = solve_triangular(L, rhs, lower=True)
        n = st["n"]
        active = n > 0
        # log N(y | 0, C), C = B^-1 + X X^T / alpha, written in weight space.
        log_det_c = (
            2 * np.log(np.diag(L)).sum()
            - d * np.log(alpha)
            - np.sum(n[active] * np.log(betas[active]))
        )
        quad = float(betas @ yy) - float(z @ z)
        return 0.5 * (quad + log_det_c + n[active].sum() * np.log(2 * np.pi))

    def optimize_hyperparameters(self) -> BayesianLinearRegression:
        """Maximise the log evidence over the free hyperparameters, then refactorise."""
        st = self._stats
        fixed = [self.alpha, self.beta, self.beta_force]
        present = [True, st["n"][ENERGY] > 0, st["n"][FORCE] > 0]
        free = [i for i in range(3) if fixed[i] is None and present[i]]
        var = 1.0
        if st["n"][ENERGY] > 0:
            _, yy, _ = self._centered()
            var = max(yy[ENERGY] / st["n"][ENERGY], 1e-8)
        defaults = np.log([1.0 / var, 10.0 / var, 100.0])
        base = np.array([np.log(v) if v is not None else defaults[i] for i, v in enumerate(fixed)])

        def unpack(theta):
            p = base.copy()
            p[free] = theta
            return np.exp(p[0]), np.exp(p[1:])

        if free:
            bounds = [LOG_ALPHA_BOUNDS if i == 0 else LOG_BETA_BOUNDS for i in free]
            lo, hi = np.array(bounds).T
            best = None
            for shift_a in (0.0, np.log(var)):
                for shift_b in (0.0, 4.0):
                    x0 = base[free] + np.array([shift_a if i == 0 else shift_b for i in free])
                    # A singular step returns inf; its finite differences are nan
                    # and L-BFGS-B backs off: silence numpy's warning about it.
                    with np.errstate(invalid="ignore", over="ignore"):
                        res = minimize(
                            lambda t: self._neg_log_evidence(*unpack(t)),
                            np.clip(x0, lo, hi),
                            method="L-BFGS-B",
                            bounds=bounds,
                        )
                    if best is None or res.fun < best.fun:
                        best = res
            base[free] = best.x
        self.alpha_, self.betas_ = unpack(base[free] if free else np.empty(0))
        if not present[2] and self.beta_force is None:
            # No rows of the second kind yet: assume they are as noisy as the first.
            self.betas_[FORCE] = self.betas_[ENERGY]
        self._factorise()
        return self

    def _factorise(self) -> None:
        st = self._stats
        d = st["G"].shape[1]
        A = self.alpha_ * np.eye(d) + np.tensordot(self.betas_, st["G"], axes=1)
        self.chol_ = cholesky(A, lower=True)
        self._solve_mean()

    def _solve_mean(self) -> None:
        b, _, c = self._centered()
        self.offset_ = float(c)
        self.mean_ = cho_solve((self.chol_, True), self.betas_ @ b)
        self._log_evidence = -self._neg_log_evidence(self.alpha_, self.betas_)

    # -- public interface -----------------------------------------------------------

    def fit(self, X, y, kind=None, weight=None) -> BayesianLinearRegression:
        """Fit posterior and (free) hyperparameters to energy and force rows.

        Parameters
        ----------
        X
            Rows of features (energy rows) or minus feature gradients (force rows),
            shape ``(n, d)``.
        y
            Targets: energies or force components, shape ``(n,)``.
        kind
            0 for an energy row, 1 for a force row; default all energy rows.
        weight
            Row weights (a row of weight ``s`` counts ``s`` times); default 1.
        """
        X, y, kind, weight = _as_rows(X, y, kind, weight)
        if weight.sum() <= 0:
            raise ValueError("cannot fit a surrogate to zero labels")
        self._stats = self._empty_stats(X.shape[1])
        self._accumulate(X, y, kind, weight)
        return self.optimize_hyperparameters()

    def update(self, X, y, kind=None, weight=None) -> BayesianLinearRegression:
        """Add labels at fixed hyperparameters with rank-one Cholesky updates.

        Costs O(k d^2) for k new rows instead of a refit's O(d^3); equals a refit with
        the same hyperparameters to round-off.
        """
        self._check_fitted()
        if self._stats is None:
            raise RuntimeError(
                "a model read with from_dict only predicts; continue one with from_state"
            )
        X, y, kind, weight = _as_rows(X, y, kind, weight)
        self._accumulate(X, y, kind, weight)
        for x, g, w in zip(X, kind, weight, strict=True):
            if w > 0:
                chol_update(self.chol_, np.sqrt(w * self.betas_[g]) * x)
        self._solve_mean()
        return self

    def frozen(self) -> BayesianLinearRegression:
        """An unfitted copy with this model's hyperparameters fixed (bootstrap members)."""
        self._check_fitted()
        return BayesianLinearRegression(
            self.alpha_, self.betas_[ENERGY], self.betas_[FORCE], self.center
        )

    def _check_fitted(self) -> None:
        if self.mean_ is None:
            raise RuntimeError("surrogate is not fitted; call fit() first")

    @property
    def beta_(self) -> float:
        """Noise precision of energy rows."""
        return float(self.betas_[ENERGY])

    def noise_variance(self, kind: int = ENERGY) -> float:
        """Aleatoric variance of one row of a kind."""
        self._check_fitted()
        return float(1.0 / self.betas_[kind])

    @property
    def covariance_(self) -> np.ndarray:
        """Posterior covariance of the weights, ``A^-1`` (formed only on request)."""
        self._check_fitted()
        if self.chol_ is None:  # from_dict
            return self._covariance.copy()
        return cho_solve((self.chol_, True), np.eye(self.chol_.shape[0]))

    @property
    def n_train_(self) -> int:
        """Number of energy rows (weighted)."""
        if self._stats is None:  # from_dict
            return self._n_train
        return round(self._stats["n"][ENERGY])

    def predict(self, X, kind: int = ENERGY) -> Prediction:
        """Predictive mean and epistemic and aleatoric variances at rows ``X``."""
        self._check_fitted()
        X = np.atleast_2d(np.asarray(X, dtype=float))
        if X.shape[1] != self.mean_.size:
            raise ValueError(f"X has {X.shape[1]} columns; the model has {self.mean_.size} weights")
        mean = X @ self.mean_ + (self.offset_ if kind == ENERGY else 0.0)
        if self.chol_ is None:  # from_dict: x^T A^-1 x from the stored covariance
            epistemic = np.maximum(((X @ self._covariance) * X).sum(axis=1), 0.0)
        else:
            v = solve_triangular(self.chol_, X.T, lower=True)  # L^-1 X^T
            epistemic = (v * v).sum(axis=0)
        aleatoric = np.full(X.shape[0], 1.0 / self.betas_[kind])
        return Prediction(mean, epistemic, aleatoric)

    def log_evidence(self) -> float:
        """Log marginal likelihood of the (centred) targets at the fitted hyperparameters."""
        self._check_fitted()
        return self._log_evidence

    def to_dict(self) -> dict:
        """Hyperparameters and posterior as plain lists (for the ``models`` store)."""
        self._check_fitted()
        return {
            "kind": "bayesian_linear",
            "alpha": self.alpha_,
            "beta": self.beta_,
            "beta_force": float(self.betas_[FORCE]),
            "offset": self.offset_,
            "n_train": self.n_train_,
            "log_evidence": self._log_evidence,
            "mean": self.mean_.tolist(),
            "covariance": self.covariance_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> BayesianLinearRegression:
        """The posterior of a :meth:`to_dict` dict (a ``models`` document), for prediction.

        ``predict`` then gives what the fitted model gave: mean ``x^T m + offset`` and
        epistemic variance ``x^T A^-1 x`` from the stored covariance ``A^-1``, aleatoric
        ``1 / beta``. Without the sufficient statistics the model cannot :meth:`update`
        or re-optimise (:meth:`from_state` continues a model).

        Parameters
        ----------
        d
            ``mean`` (d,), ``covariance`` (d, d), ``beta``; optional ``beta_force``
            (default ``beta``), ``offset`` (default 0), ``alpha``, ``n_train``,
            ``log_evidence``.

        Raises
        ------
        ValueError
            A missing posterior, or shapes that disagree.
        """
        if d.get("mean") is None or d.get("covariance") is None or d.get("beta") is None:
            raise ValueError("a stored surrogate needs 'mean', 'covariance' and 'beta'")
        mean = np.asarray(d["mean"], dtype=float).reshape(-1)
        cov = np.asarray(d["covariance"], dtype=float)
        if cov.shape != (mean.size, mean.size):
            raise ValueError(f"covariance {cov.shape} does not fit {mean.size} weights")
        beta = float(d["beta"])
        beta_force = float(d.get("beta_force") or beta)
        model = cls()
        model.alpha_ = float(d.get("alpha") or np.nan)
        model.betas_ = np.array([beta, beta_force])
        model.offset_ = float(d.get("offset") or 0.0)
        model.mean_ = mean
        model._covariance = 0.5 * (cov + cov.T)
        model._n_train = int(d.get("n_train") or 0)
        model._log_evidence = float(d.get("log_evidence") or np.nan)
        return model

    def get_state(self) -> dict:
        """Everything needed to continue this model elsewhere, as plain lists: settings,
        fitted hyperparameters and the sufficient statistics (no raw rows).

        :meth:`from_state` rebuilds the posterior from it, and :meth:`update` can then add
        labels exactly as if the model had never left memory.
        """
        self._check_fitted()
        return {
            "settings": {
                "alpha": self.alpha,
                "beta": self.beta,
                "beta_force": self.beta_force,
                "center": self.center,
            },
            "alpha_": float(self.alpha_),
            "betas_": self.betas_.tolist(),
            "stats": {k: np.asarray(v).tolist() for k, v in self._stats.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> BayesianLinearRegression:
        """The model of a :meth:`get_state` dict (posterior refactorised from the statistics)."""
        model = cls(**state["settings"])
        model._stats = {
            k: (float(v) if k == "sy" else np.asarray(v, dtype=float))
            for k, v in state["stats"].items()
        }
        model.alpha_ = float(state["alpha_"])
        model.betas_ = np.asarray(state["betas_"], dtype=float)
        model._factorise()
        return model


@dataclass
class BootstrapEnsemble:
    """A committee of Bayesian linear models on bootstrap resamples of the labels.

    Each member sees every row with a Poisson(1) weight (the online bootstrap), so
    labels can be added incrementally like the single model. Hyperparameters are
    chosen once by evidence on all data and shared by the members. The epistemic
    variance is the spread of the members' mean predictions (committee disagreement);
    the aleatoric variance is the members' mean noise variance.

    Parameters
    ----------
    n_members
        Committee size.
    seed
        Seed of the bootstrap weights.
    """

    n_members: int = 8
    seed: int = 0
    alpha: float | None = None
    beta: float | None = None
    beta_force: float | None = None
    center: bool = True
    base: Callable[[], Surrogate] | None = None
    members_: list = field(default_factory=list, init=False, repr=False)
    reference_: BayesianLinearRegression = field(default=None, init=False, repr=False)
    _rng: np.random.Generator = field(default=None, init=False, repr=False)

    def _reference(self):
        if self.base is not None:
            return self.base()
        return BayesianLinearRegression(self.alpha, self.beta, self.beta_force, self.center)

    def fit(self, X, y, kind=None) -> BootstrapEnsemble:
        """Fit the reference model (hyperparameters), then every member."""
        X, y, kind, _ = _as_rows(X, y, kind, None)
        self._rng = np.random.default_rng(self.seed)
        self.reference_ = self._reference().fit(X, y, kind)
        self.members_ = []
        for _ in range(self.n_members):
            member = self.reference_.frozen()
            self.members_.append(member.fit(X, y, kind, self._rng.poisson(1.0, len(y))))
        return self

    def update(self, X, y, kind=None) -> BootstrapEnsemble:
        """Add labels to the reference model and to every member (Poisson weights)."""
        X, y, kind, _ = _as_rows(X, y, kind, None)
        self.reference_.update(X, y, kind)
        for member in self.members_:
            member.update(X, y, kind, self._rng.poisson(1.0, len(y)))
        return self

    def predict(self, X, kind: int = ENERGY) -> Prediction:
        """Committee mean, committee variance (epistemic) and mean noise variance."""
        preds = [m.predict(X, kind) for m in self.members_]
        means = np.array([p.mean for p in preds])
        return Prediction(
            means.mean(axis=0),
            means.var(axis=0, ddof=1),
            np.mean([p.aleatoric_var for p in preds], axis=0),
        )

    def noise_variance(self, kind: int = ENERGY) -> float:
        """Aleatoric variance of one row of a kind (the reference model's)."""
        return self.reference_.noise_variance(kind)

    def log_evidence(self) -> float:
        """Log evidence of the reference model on all data."""
        return self.reference_.log_evidence()

    @property
    def covariance_(self) -> np.ndarray:
        """Posterior covariance of the reference model's weights (full rank).

        The spread of the members' weight means has rank at most ``n_members - 1``, so a
        D-optimal batch or an information gain computed from it sees no uncertainty in
        most directions. The rules that need a weight covariance therefore use the
        Bayesian posterior of the same features and hyperparameters; the committee
        spread stays the epistemic variance of :meth:`predict`.
        """
        return self.reference_.covariance_

    @property
    def committee_covariance_(self) -> np.ndarray:
        """Covariance of the members' weight means (rank <= ``n_members - 1``)."""
        return np.cov(np.array([m.mean_ for m in self.members_]).T, ddof=1)

    def to_dict(self) -> dict:
        """The reference model plus the members' means and energy offsets."""
        ref = self.reference_.to_dict()
        return {
            **ref,
            "reference_kind": ref["kind"],
            "kind": "ensemble",
            "n_members": self.n_members,
            "member_means": [m.mean_.tolist() for m in self.members_],
            "member_offsets": [float(m.offset_) for m in self.members_],
        }

    @classmethod
    def from_dict(cls, d: dict) -> BootstrapEnsemble:
        """The committee of a :meth:`to_dict` dict, for prediction.

        The members share the reference model's noise precisions, so the committee's
        prediction needs only their means and offsets: ``predict`` gives what the
        fitted committee gave.

        Raises
        ------
        ValueError
            No member means or offsets (a committee stored by an older version, without
            its members' offsets, cannot be reproduced).
        """
        means, offsets = d.get("member_means"), d.get("member_offsets")
        if not means or offsets is None or len(offsets) != len(means):
            raise ValueError("a stored ensemble needs 'member_means' and 'member_offsets'")
        model = cls(n_members=len(means))
        model.reference_ = BayesianLinearRegression.from_dict(d)
        model.members_ = [
            BayesianLinearRegression.from_dict({**d, "mean": m, "offset": o})
            for m, o in zip(means, offsets, strict=True)
        ]
        return model


SURROGATES = {"bayesian_linear": BayesianLinearRegression, "ensemble": BootstrapEnsemble}


def surrogate_from_dict(d: dict) -> Surrogate:
    """The surrogate of a stored ``to_dict`` dict, by its ``kind`` (default
    ``bayesian_linear``), ready to ``predict``.

    Raises
    ------
    ValueError
        An unknown kind, or a dict that does not hold a posterior.
    """
    kind = d.get("kind") or "bayesian_linear"
    if kind == "bayesian_cluster_expansion":
        # Its stored posterior (mean and covariance over every offered column, zero
        # outside the chosen basis) predicts exactly as a Bayesian linear model's.
        return BayesianLinearRegression.from_dict(d)
    return _surrogate_class(kind).from_dict(d)


def _surrogate_class(kind: str) -> type:
    try:
        return SURROGATES[kind]
    except KeyError:
        raise ValueError(
            f"unknown surrogate {kind!r}; choose one of {sorted(SURROGATES)}"
        ) from None


def make_surrogate(kind: str, **kwargs) -> Surrogate:
    """Build a surrogate by its config name."""
    return _surrogate_class(kind)(**kwargs)
