"""Acquisition rules: score a pool of candidates and select a batch (pure numpy/scipy).

Every rule has one interface, ``select(pool, k, rng) -> Selection``; a :class:`Pool`
carries what the rules may need: the surrogate's prediction on the candidates, their
features, the posterior covariance of the weights, compositions, and per-fidelity
costs. Rules are chosen in the campaign config by name (:data:`RULES`).

* ``max_variance``: largest epistemic variance.
* ``mutual_information``: largest ``I = 1/2 ln(1 + s_e^2 / s_a^2)``, the information a
  label carries about the weights.
* ``d_optimal``: greedy batch maximising ``log det(I + beta X_S Sigma X_S^T)``, the
  information the whole batch carries; each pick is a rank-one update of the
  covariance, and candidates' variances are re-evaluated lazily (at most O(N d k) for
  a batch of k, usually far less). Greedy maximisation of this monotone submodular
  function reaches at least (1 - 1/e) of the best batch (Nemhauser, Wolsey and
  Fisher 1978).
* ``cost_aware``: greedy information gain per unit cost over (candidate, fidelity)
  pairs of a multi-fidelity linear model (see :func:`multi_fidelity_rows`).
* ``lower_confidence_bound``: ground-state search; smallest ``mu - kappa s_e``
  measured as a distance to the convex hull of the predicted energies.
* ``ground_state``: ground-state search from joint posterior samples of the convex
  hull (:mod:`alcampaign.science.hull`): the candidate most often on the sampled hulls
  first, then each further batch member after believing the earlier picks' labels.
* ``random``: the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from alcampaign.science.hull import (
    GroundStateEstimate,
    believer_batch,
    estimate_ground_states,
    hull_energies,
)
from alcampaign.science.surrogate import Prediction


@dataclass
class Selection:
    """A batch chosen by an acquisition rule.

    Attributes
    ----------
    indices
        Positions in the pool, in the order they were chosen.
    scores
        The score of each chosen candidate when it was chosen.
    fidelities
        The fidelity chosen for each (multi-fidelity rules), else ``None``.
    """

    indices: np.ndarray
    scores: np.ndarray
    fidelities: list[str] | None = None


@dataclass
class Pool:
    """What a rule may use to score candidates.

    Attributes
    ----------
    prediction
        Surrogate prediction (energy per atom) at every pool candidate.
    X
        Pool features, shape ``(N, d)`` (for batch rules).
    covariance
        Posterior covariance of the weights, ``(d, d)`` (for batch rules).
    noise_var
        Aleatoric variance of one label.
    compositions
        Atomic fractions of each candidate, ``(N, n_elements)`` (ground-state search).
    fidelity_rows
        Multi-fidelity rules: ``{fidelity: (rows (N, D), noise_var, cost, available)}``;
        rows are the linear-model rows of a label at that fidelity (for the joint
        covariance), ``available`` masks the candidates that may be asked at it.
    joint_covariance
        Multi-fidelity rules: the posterior covariance of the joint weights ``(D, D)``.
    labels
        ``ground_state``: labelled energies per atom, ``nan`` where unlabelled (the pool
        then holds labelled candidates too: every hull needs them).
    selectable
        ``ground_state``: which candidates may be asked (default: the unlabelled ones).
    ground_states
        ``ground_state``: a hull estimate made already for these candidates (the
        controller's, also used by the stopping rule), else the rule samples one.
    """

    prediction: Prediction
    X: np.ndarray | None = None
    covariance: np.ndarray | None = None
    noise_var: float | None = None
    compositions: np.ndarray | None = None
    fidelity_rows: dict = field(default_factory=dict)
    joint_covariance: np.ndarray | None = None
    labels: np.ndarray | None = None
    selectable: np.ndarray | None = None
    ground_states: GroundStateEstimate | None = None

    @property
    def size(self) -> int:
        """Number of candidates."""
        return self.prediction.mean.size


class AcquisitionRule(Protocol):
    """Score a pool and select ``k`` candidates from it."""

    name: str

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection: ...


def _top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> Selection:
    """The ``k`` highest scores; ties are broken at random so the choice is unbiased."""
    k = min(k, scores.size)
    if k <= 0:
        return Selection(np.empty(0, dtype=int), np.empty(0))
    jitter = rng.random(scores.size)
    order = np.lexsort((-jitter, -scores))[:k]
    return Selection(order, scores[order])


def mutual_information(epistemic_var: np.ndarray, aleatoric_var: np.ndarray) -> np.ndarray:
    """Information a noisy label carries about the weights: 1/2 ln(1 + s_e^2 / s_a^2)."""
    return 0.5 * np.log1p(epistemic_var / aleatoric_var)


def greedy_d_optimal(
    X: np.ndarray,
    covariance: np.ndarray,
    noise_var: float,
    k: int,
    costs: np.ndarray | None = None,
    available: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximisation of the information gained by a batch, with rank-one updates.

    The gain of a batch S is ``1/2 log det(I + X_S Sigma X_S^T / noise)``; by the chain
    rule it is the sum over picks of ``1/2 log(1 + v_i / noise)``, ``v_i`` being the
    predictive variance *given the earlier picks*. Each pick ``j`` is a rank-one update
    of the covariance::

        u = Sigma_t x_j / sqrt(noise_j + v_j),   Sigma_{t+1} = Sigma_t - u u^T

    so ``Sigma_t = Sigma_0 - U_t U_t^T`` and ``v_i = x_i^T Sigma_0 x_i - |U_t^T x_i|^2``.
    Variances only shrink as picks are added (the gain is submodular), so scores from
    earlier picks are upper bounds: the search re-evaluates only the candidate on top
    until one that is up to date stays on top (lazy greedy, Minoux 1978), an O(d t)
    evaluation each. The result is the plain greedy batch (up to exact ties); the cost
    is the O(N d^2) initial variances plus a few evaluations a pick. When lazy
    evaluation stalls, all variances are refreshed at once, O(N d t).

    Parameters
    ----------
    X
        Candidate rows ``(N, d)``.
    covariance
        Posterior covariance ``(d, d)``.
    noise_var
        Label noise variance (a scalar, or one per row).
    k
        Batch size.
    costs
        Optional cost per row: picks then maximise gain per unit cost.
    available
        Optional mask of the rows that may be picked.

    Returns
    -------
    indices, gains
        Picked rows in order, and the information gain of each pick (nats).
    """
    X = np.asarray(X, dtype=float)
    sigma0 = np.asarray(covariance, dtype=float)
    n = X.shape[0]
    noise = np.broadcast_to(np.asarray(noise_var, dtype=float), (n,))
    cost = np.ones(n) if costs is None else np.broadcast_to(np.asarray(costs, dtype=float), (n,))
    mask = np.ones(n, dtype=bool) if available is None else np.array(available, dtype=bool)
    v0 = ((X @ sigma0) * X).sum(axis=1)

    def score(v):
        return 0.5 * np.log1p(np.maximum(v, 0.0) / noise) / cost

    bound = np.where(mask, score(v0), -np.inf)  # upper bounds of the current scores
    fresh = np.full(n, -1)  # the pick number at which each bound was last made exact
    U = np.zeros((X.shape[1], 0))
    picks, gains = [], []
    for t in range(min(k, int(mask.sum()))):
        for _ in range(64):
            j = int(np.argmax(bound))
            if fresh[j] == t:
                break
            w = U.T @ X[j]
            bound[j] = 0.5 * np.log1p(max(v0[j] - w @ w, 0.0) / noise[j]) / cost[j]
            fresh[j] = t
        else:  # lazy evaluation stalled: make every bound exact at once
            v = v0 - ((X @ U) ** 2).sum(axis=1)
            bound = np.where(np.isfinite(bound), score(v), -np.inf)
            fresh[:] = t
            j = int(np.argmax(bound))
        w = U.T @ X[j]
        v_j = max(v0[j] - w @ w, 0.0)
        picks.append(j)
        gains.append(float(0.5 * np.log1p(v_j / noise[j])))
        bound[j] = -np.inf
        u = (sigma0 @ X[j] - U @ w) / np.sqrt(noise[j] + v_j)
        U = np.column_stack([U, u])
    return np.array(picks, dtype=int), np.array(gains)


def batch_information(X: np.ndarray, covariance: np.ndarray, noise_var: float) -> float:
    """``1/2 log det(I + X Sigma X^T / noise)``: the information a batch carries."""
    M = np.eye(X.shape[0]) + X @ covariance @ X.T / noise_var
    return 0.5 * float(np.linalg.slogdet(M)[1])


@dataclass
class MaxVariance:
    """Choose the candidates with the largest epistemic predictive variance."""

    name: str = "max_variance"

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        """Top-``k`` epistemic variances."""
        return _top_k(pool.prediction.epistemic_var, k, rng)


@dataclass
class MutualInformation:
    """Choose the candidates whose labels carry the most information about the weights."""

    name: str = "mutual_information"

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        """Top-``k`` of ``1/2 ln(1 + s_e^2 / s_a^2)``."""
        p = pool.prediction
        return _top_k(mutual_information(p.epistemic_var, p.aleatoric_var), k, rng)


@dataclass
class DOptimal:
    """Greedy D-optimal batch: the most informative *set*, not k individually best."""

    name: str = "d_optimal"

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        """Greedy batch with rank-one variance updates (see :func:`greedy_d_optimal`)."""
        if pool.X is None or pool.covariance is None:
            raise ValueError("d_optimal needs the pool features and the posterior covariance")
        noise = (
            pool.noise_var
            if pool.noise_var is not None
            else float(np.mean(pool.prediction.aleatoric_var))
        )
        idx, gains = greedy_d_optimal(pool.X, pool.covariance, noise, k)
        return Selection(idx, gains)


@dataclass
class CostAware:
    """Information gain per unit cost over (candidate, fidelity) pairs.

    The pool's ``fidelity_rows`` hold, for each fidelity, the joint linear-model rows
    of a label at that fidelity (see :func:`multi_fidelity_rows`), its noise variance
    and its cost. The greedy D-optimal recursion runs over all pairs with
    gain-per-cost scores, so a cheap label that pins the shared part of the model can
    win over a dear one, and the batch holds no pair twice.
    """

    name: str = "cost_aware"

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        """Greedy gain-per-cost picks of (candidate, fidelity)."""
        if not pool.fidelity_rows or pool.joint_covariance is None:
            raise ValueError("cost_aware needs multi-fidelity rows and their joint covariance")
        names = list(pool.fidelity_rows)
        rows = np.vstack([pool.fidelity_rows[f][0] for f in names])
        noise = np.concatenate([np.full(pool.size, pool.fidelity_rows[f][1]) for f in names])
        costs = np.concatenate([np.full(pool.size, pool.fidelity_rows[f][2]) for f in names])
        available = np.concatenate([pool.fidelity_rows[f][3] for f in names])
        idx, gains = greedy_d_optimal(rows, pool.joint_covariance, noise, k, costs, available)
        return Selection(idx % pool.size, gains / costs[idx], [names[i // pool.size] for i in idx])


@dataclass
class LowerConfidenceBound:
    """Ground-state search: the most optimistic distance to the predicted convex hull.

    The score of a candidate is ``-(mu - kappa s_e - hull(mu))``: candidates whose
    optimistic energy falls furthest below (or least above) the hull of the predicted
    energies come first.
    """

    kappa: float = 2.0
    name: str = "lower_confidence_bound"

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        """Top-``k`` of the negative optimistic hull distance."""
        if pool.compositions is None:
            raise ValueError("lower_confidence_bound needs the candidates' compositions")
        p = pool.prediction
        lcb = p.mean - self.kappa * np.sqrt(p.epistemic_var)
        distance = lcb - hull_energies(pool.compositions, p.mean)
        return _top_k(-distance, k, rng)


@dataclass
class GroundState:
    """Ground-state search from sampled convex hulls (convex-hull-aware active learning).

    Joint samples of every candidate's energy (labelled ones at their labels) give
    sampled lower hulls (:func:`~alcampaign.science.hull.estimate_ground_states`); the
    score of a candidate is the fraction of samples in which it is a hull vertex, its
    probability of being a ground state (Novick et al., Materials Horizons 2024). The
    expected number of ground states a batch labels is the sum of these, and the
    first pick maximises it. A batch is diverse by construction: each further member
    is chosen after the earlier picks' labels are believed (kriging believer, samples
    conditioned by Matheron's rule, :func:`~alcampaign.science.hull.believer_batch`), so
    a near-copy of a pick, on the hull only where the pick is not, is not picked too.

    Parameters
    ----------
    n_samples
        Joint posterior samples.
    """

    n_samples: int = 1000
    name: str = "ground_state"

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        """``k`` picks of the most probable unlabelled ground states, diverse."""
        if pool.compositions is None or pool.X is None or pool.covariance is None:
            raise ValueError(
                "ground_state needs the candidates' compositions, features and the "
                "posterior covariance"
            )
        labels = np.full(pool.size, np.nan) if pool.labels is None else pool.labels
        selectable = np.isnan(labels) if pool.selectable is None else pool.selectable
        noise = (
            pool.noise_var
            if pool.noise_var is not None
            else float(np.mean(pool.prediction.aleatoric_var))
        )
        est = pool.ground_states
        if est is None:
            est = estimate_ground_states(
                pool.prediction.mean, pool.X, pool.covariance, pool.compositions, labels,
                self.n_samples, rng, noise,
            )
        idx, scores = believer_batch(
            est, pool.X, pool.covariance, noise, pool.prediction.mean, pool.compositions,
            selectable, k,
        )
        if idx.size < min(k, int(selectable.sum())):
            # Fewer contenders than picks: the rest by the smallest mean hull distance.
            rest = np.flatnonzero(selectable & ~np.isin(np.arange(pool.size), idx))
            extra = rest[np.argsort(est.hull_distance[rest], kind="stable")][: k - idx.size]
            idx = np.r_[idx, extra]
            scores = np.r_[scores, est.p_on_hull[extra]]
        return Selection(idx.astype(int), scores)


@dataclass
class RandomChoice:
    """Choose uniformly at random: the baseline every other rule must beat."""

    name: str = "random"

    def select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        """``k`` distinct candidates drawn uniformly; the score is a uniform draw."""
        return _top_k(rng.random(pool.size), k, rng)


RULES: dict[str, type] = {
    "max_variance": MaxVariance,
    "mutual_information": MutualInformation,
    "d_optimal": DOptimal,
    "cost_aware": CostAware,
    "lower_confidence_bound": LowerConfidenceBound,
    "ground_state": GroundState,
    "random": RandomChoice,
}


def make_rule(name: str, **kwargs) -> AcquisitionRule:
    """Build an acquisition rule by its config name."""
    try:
        return RULES[name](**kwargs)
    except KeyError:
        raise ValueError(
            f"unknown acquisition rule {name!r}; choose one of {sorted(RULES)}"
        ) from None


def multi_fidelity_rows(X: np.ndarray, fidelity: str, cheap: str) -> np.ndarray:
    """Rows of the linked two-fidelity linear model.

    The cheap fidelity is ``E_cheap = w_c . x``; the dear one is the cheap one plus a
    learned correction, ``E_dear = w_c . x + w_d . x``. The joint weights are
    ``[w_c, w_d]``, so a cheap label is the row ``[x, 0]`` and a dear one ``[x, x]``.

    Parameters
    ----------
    X
        Features ``(N, d)``.
    fidelity
        Fidelity of the rows wanted.
    cheap
        Name of the cheap fidelity.
    """
    return np.hstack([X, np.zeros_like(X) if fidelity == cheap else X])


# -- diversity and coverage --------------------------------------------------------------


def _sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T
    return np.maximum(d2, 0.0)


def coverage_metrics(
    X_pool: np.ndarray,
    X_train: np.ndarray,
    radius: float | None = None,
    length_scale: float | None = None,
    chunk: int = 4096,
) -> dict[str, float]:
    """Diversity of a training set and its coverage of a pool.

    Parameters
    ----------
    X_pool, X_train
        Features of every candidate and of the labelled ones.
    radius
        Coverage radius; default: the median nearest-neighbour distance within the pool
        (estimated on at most ~2000 pool points).
    length_scale
        RBF length scale of the kernel log-determinant; default ``radius``.

    Returns
    -------
    dict
        ``coverage`` (fraction of the pool within ``radius`` of a training point),
        ``min_pairwise_distance`` among training points, ``kernel_logdet`` of the RBF
        kernel matrix of the training set (larger: more diverse), and the ``radius``.
    """
    X_pool = np.asarray(X_pool, dtype=float)
    X_train = np.asarray(X_train, dtype=float)
    if radius is None:
        sample = X_pool[:: max(1, X_pool.shape[0] // 2000)]
        d2 = _sq_distances(sample, sample)
        np.fill_diagonal(d2, np.inf)
        finite = np.sqrt(d2.min(axis=1))
        radius = float(np.median(finite[np.isfinite(finite)])) if finite.size > 1 else 1.0
        radius = radius if radius > 0 else 1.0
    length_scale = length_scale or radius
    nearest = np.empty(X_pool.shape[0])
    for start in range(0, X_pool.shape[0], chunk):
        block = _sq_distances(X_pool[start : start + chunk], X_train)
        nearest[start : start + chunk] = np.sqrt(block.min(axis=1))
    dt = _sq_distances(X_train, X_train)
    K = np.exp(-dt / (2 * length_scale**2)) + 1e-8 * np.eye(len(X_train))
    np.fill_diagonal(dt, np.inf)
    return {
        "coverage": float(np.mean(nearest <= radius + 1e-12)),
        "min_pairwise_distance": float(np.sqrt(dt.min())) if len(X_train) > 1 else None,
        "kernel_logdet": float(np.linalg.slogdet(K)[1]),
        "radius": float(radius),
    }
