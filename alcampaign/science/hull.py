"""Convex hulls of formation energy sampled from a surrogate's posterior (pure numpy/scipy).

Ground-state search asks which candidates are vertices of the lower convex hull of
energy per atom over composition. The surrogate gives a joint Gaussian posterior over
every candidate's energy (a Bayesian linear model ``E = X w`` with ``w ~ N(m, S)``), so
the hull itself is random. Following convex-hull-aware active learning (Novick,
Cai, Nguyen, Garnett, Adams and Toberer, "Probabilistic prediction of material
stability: integrating convex hulls into active learning", Materials Horizons 2024),
we draw joint samples of the energies, put labelled candidates at their labels, build
each sample's lower hull and count, for every candidate, how often it is a vertex:

* ``p_on_hull``: the Monte Carlo estimate of P(candidate is a ground state);
* ``hull_distance``: the posterior mean of ``E - hull(composition)`` (eV/atom);
* ``expected_missing``: the expected number of ground states not yet labelled that
  lie more than a tolerance below the hull of the labelled candidates (the stopping
  criterion ``missing_ground_states`` with ``hull_tolerance``; with tolerance 0,
  ``sum(p_on_hull)`` over unlabelled candidates).

Hulls are built in as many dimensions as the compositions span (scipy's Qhull; a
monotone chain for binaries). Only the lowest energy at each composition can be a
vertex, so each sample's hull is built over the per-composition minima, found for a
whole block of samples at once with ``np.minimum.reduceat``: the per-sample cost
depends on the number of distinct compositions, not of candidates. Every sampled hull
lies at or below the hull of the labelled candidates, so candidates that cannot reach
it are not sampled and compositions whose sampled minimum lies above it do not enter
that sample's hull. Blocks of samples run on threads, each from its own seed.

Hull energies do not depend on the reference energies of the end members (formation
energy is an affine function of energy per atom at fixed composition), so energies per
atom are used as they are.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg.blas import sgemm
from scipy.spatial import ConvexHull, QhullError


def composition_coordinates(compositions: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Coordinates of compositions in the affine space they span.

    Atomic fractions of ``m`` elements live in an ``m - 1`` dimensional simplex, and a
    fixed sublattice (an anion that never changes) removes further dimensions; a hull
    needs full-dimensional points, so the fractions are projected onto their own
    affine span (principal axes of the centred fractions).

    Parameters
    ----------
    compositions
        Atomic fractions, ``(N, m)``.
    tol
        Singular values below ``tol`` (relative to the largest) are dropped.

    Returns
    -------
    np.ndarray
        ``(N, r)`` coordinates, ``r`` the dimension of the composition space (0 when
        every candidate has the same composition).
    """
    C = np.asarray(compositions, dtype=float)
    if C.ndim != 2 or C.shape[0] == 0:
        raise ValueError(f"compositions must be a non-empty (N, m) array, got {C.shape}")
    centred = C - C.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = s > tol * max(float(s[0]) if s.size else 0.0, 1.0)
    return centred @ vt[keep].T


def _chain_lower_hull(x: np.ndarray, e: np.ndarray) -> list[int]:
    """Lower hull vertices of points on a line (Andrew's monotone chain), sorted by x.

    ``x`` must be sorted increasingly and distinct.
    """
    hull: list[int] = []
    for i in range(x.size):
        while len(hull) >= 2:
            i0, i1 = hull[-2], hull[-1]
            cross = (x[i1] - x[i0]) * (e[i] - e[i0]) - (e[i1] - e[i0]) * (x[i] - x[i0])
            if cross <= 0.0:
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def lower_hull(
    coords: np.ndarray, energies: np.ndarray, at: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the lower convex hull of ``(coords, energy)`` and the hull's energy.

    Parameters
    ----------
    coords
        ``(G, r)`` distinct composition coordinates (see :func:`composition_coordinates`).
    energies
        ``(G,)`` energy per atom at each.
    at
        ``(Q, r)`` where to evaluate the hull (default ``coords``; inside their span).

    Returns
    -------
    vertex, hull
        ``vertex[g]``: point ``g`` is a vertex of the lower hull (points inside a facet
        are not); ``hull[q]``: the hull's energy at ``at[q]`` (so ``energies - hull``
        is the distance above the hull, >= 0 up to round-off, when ``at`` is
        ``coords``).
    """
    coords = np.asarray(coords, dtype=float)
    at = coords if at is None else np.asarray(at, dtype=float)
    e = np.asarray(energies, dtype=float)
    G, r = coords.shape
    vertex = np.zeros(G, dtype=bool)
    if r == 0 or G == 1:
        vertex[int(np.argmin(e))] = True
        return vertex, np.full(at.shape[0], e.min())
    if r == 1:
        order = np.argsort(coords[:, 0], kind="stable")
        x = coords[order, 0]
        chain = order[_chain_lower_hull(x, e[order])]
        vertex[chain] = True
        return vertex, np.interp(at[:, 0], coords[chain, 0], e[chain])
    if G <= r + 1:  # a simplex (or less): every point is a vertex, one plane
        vertex[:] = True
        if at is coords:
            return vertex, e.copy()
        coef, *_ = np.linalg.lstsq(np.column_stack([coords, np.ones(G)]), e, rcond=None)
        return vertex, np.column_stack([at, np.ones(at.shape[0])]) @ coef
    hull, lower = _lower_facets(np.column_stack([coords, e]))
    vertex[hull.simplices[lower].ravel()] = True
    return vertex, _hull_at(hull.equations[lower], at)


def _lower_facets(points: np.ndarray) -> tuple[ConvexHull, np.ndarray]:
    """The convex hull of ``(coords, energy)`` points (joggled when degenerate) and the
    mask of its lower facets (outward normal pointing down in energy)."""
    try:
        hull = ConvexHull(points)
    except QhullError:
        hull = ConvexHull(points, qhull_options="QJ")
    return hull, hull.equations[:, -2] < -1e-12


def _hull_at(lower: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The lower hull's energy at ``coords``, from its facets' equations.

    On a lower facet ``n_c . c + n_e e + b = 0``, so ``e = -(n_c . c + b) / n_e``; the
    lower hull at ``c`` is the largest of these supporting planes.
    """
    return (-(coords @ lower[:, :-2].T + lower[:, -1]) / lower[:, -2]).max(axis=1)


def hull_energies(
    compositions: np.ndarray, energies: np.ndarray, query: np.ndarray | None = None
) -> np.ndarray:
    """Energy of the lower convex hull of ``(composition, energy)`` points.

    Parameters
    ----------
    compositions
        Atomic fractions, ``(N, m)`` (rows sum to one).
    energies
        Energies per atom, ``(N,)``.
    query
        Compositions at which to evaluate the hull (default: ``compositions``).

    Returns
    -------
    np.ndarray
        The hull energy at each query composition. Distance to the hull is
        ``energy - hull``.
    """
    C = np.asarray(compositions, dtype=float)[:, :-1]  # the last fraction is implied
    Q = C if query is None else np.asarray(query, dtype=float)[:, :-1]
    E = np.asarray(energies, dtype=float)
    if C.shape[1] == 0:  # one element: the hull is the lowest energy
        return np.full(Q.shape[0], E.min())
    hull, lower = _lower_facets(np.column_stack([C, E]))
    return _hull_at(hull.equations[lower], Q)


@dataclass
class CompositionGroups:
    """Candidates grouped by composition (only a group's minimum can be a vertex).

    Attributes
    ----------
    coords
        ``(G, r)`` coordinates of each distinct composition.
    group
        ``(N,)`` group of each candidate.
    order
        Candidates sorted by group (stable).
    starts
        Where each group starts in ``order``.
    """

    coords: np.ndarray
    group: np.ndarray
    order: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, compositions: np.ndarray, decimals: int = 8) -> CompositionGroups:
        """Group candidates whose atomic fractions agree to ``decimals`` places."""
        groups = cls.of_coords(compositions, decimals)
        groups.coords = composition_coordinates(groups.coords)
        return groups

    @classmethod
    def of_coords(cls, coords: np.ndarray, decimals: int = 8) -> CompositionGroups:
        """Group points by coordinates already projected (no further projection)."""
        C = np.round(np.asarray(coords, dtype=float), decimals) + 0.0  # no -0.0
        n = C.shape[0]
        order = np.lexsort(C.T[::-1]) if C.shape[1] else np.arange(n)  # rows, sorted
        Cs = C[order]
        new = np.r_[True, np.any(Cs[1:] != Cs[:-1], axis=1)] if n else np.zeros(0, bool)
        group = np.empty(n, dtype=np.int64)
        group[order] = np.cumsum(new) - 1
        # Each group's coordinates: its first member's, unrounded.
        unique = np.asarray(coords, dtype=float)[order][new]
        starts = np.flatnonzero(new)
        return cls(unique, group, order, starts)

    @property
    def size(self) -> int:
        """Number of distinct compositions."""
        return self.coords.shape[0]


def end_member_indices(
    compositions: np.ndarray, energies: np.ndarray | None = None
) -> np.ndarray:
    """One candidate at each corner of the composition space (the end members).

    The corners are the vertices of the convex hull of the compositions (pure elements
    of a binary alloy, end compounds of each sublattice); every formation energy and
    every hull needs them. At a corner with several candidates the one with the lowest
    ``energies`` (e.g. a CHGNet prescreen) is chosen, else the first.

    Parameters
    ----------
    compositions
        Atomic fractions ``(N, m)``.
    energies
        Optional cheap energies ``(N,)`` to choose among candidates at one corner
        (``nan`` is ignored).

    Returns
    -------
    np.ndarray
        Candidate indices, one per corner, sorted.
    """
    groups = CompositionGroups.of(compositions)
    coords = groups.coords
    G, r = coords.shape
    if r == 0:
        corners = np.array([0])
    elif r == 1:
        corners = np.array([int(np.argmin(coords[:, 0])), int(np.argmax(coords[:, 0]))])
    elif G <= r + 1:
        corners = np.arange(G)
    else:
        try:
            corners = ConvexHull(coords).vertices
        except QhullError:
            corners = ConvexHull(coords, qhull_options="QJ").vertices
    key = np.zeros(len(groups.group)) if energies is None else np.asarray(energies, dtype=float)
    key = np.where(np.isfinite(key), key, np.inf)
    chosen = []
    for g in np.unique(corners):
        members = np.flatnonzero(groups.group == g)
        chosen.append(int(members[np.argmin(key[members])]))
    return np.array(sorted(chosen), dtype=int)


def _square_root(covariance: np.ndarray) -> np.ndarray:
    """A factor ``R`` with ``R R^T = covariance`` (Cholesky; eigenvalues if singular)."""
    S = np.asarray(covariance, dtype=float)
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(0.5 * (S + S.T))
        return vecs * np.sqrt(np.clip(vals, 0.0, None))


@dataclass
class HullCounts:
    """Running sums over samples: vertex counts and the hull at each composition.

    ``missing[t]`` counts, per candidate, the samples in which it is a hull vertex more
    than ``tolerances[t]`` below the labelled hull (see :func:`count_hull_vertices`).
    """

    n: int
    on_hull: np.ndarray
    hull_sum: np.ndarray | float = 0.0
    n_samples: int = 0
    tolerances: tuple[float, ...] = ()
    missing: np.ndarray | None = None
    changed: np.ndarray | None = None

    @classmethod
    def empty(cls, n: int, tolerances: tuple[float, ...] = ()) -> HullCounts:
        """Zero counts for ``n`` candidates."""
        tol = tuple(float(t) for t in tolerances)
        return cls(n, np.zeros(n), tolerances=tol, missing=np.zeros((len(tol), n)),
                   changed=np.zeros(len(tol)))

    @classmethod
    def merge(cls, parts: list[HullCounts]) -> HullCounts:
        """The sums of several running counts over the same candidates."""
        out = parts[0]
        for p in parts[1:]:
            out.on_hull += p.on_hull
            out.missing += p.missing
            out.changed += p.changed
            out.hull_sum = out.hull_sum + p.hull_sum
            out.n_samples += p.n_samples
        return out


def _sample_hulls(
    coords: np.ndarray, gmin: np.ndarray, bound: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Lower hull of each row of ``gmin`` (per-composition minima of one sample).

    Every sampled hull lies at or below ``bound`` (the labelled hull), so a composition
    whose minimum is above it cannot be a vertex: each hull is built over the others
    only (removing points that are not vertices leaves a convex hull unchanged) and
    evaluated at every composition from its facets.
    """
    S, G = gmin.shape
    vertex = np.zeros((S, G), dtype=bool)
    hull = np.empty((S, G))
    below = None if bound is None else gmin <= bound + 1e-6
    for s in range(S):
        if below is None or below[s].all():
            vertex[s], hull[s] = lower_hull(coords, gmin[s])
            continue
        idx = np.flatnonzero(below[s])
        v, hull[s] = lower_hull(coords[idx], gmin[s, idx], coords)
        vertex[s, idx[v]] = True
    return vertex, hull


def count_hull_vertices(
    samples: np.ndarray,
    groups: CompositionGroups,
    counts: HullCounts,
    priority: np.ndarray,
    bound: np.ndarray | None = None,
) -> None:
    """Add one block of energy samples to the running counts.

    Parameters
    ----------
    samples
        ``(S, N)`` joint energy samples (labelled candidates at their labels).
    groups
        The candidates' composition groups.
    counts
        Running sums, updated in place.
    priority
        ``(N,)`` exact ties at a composition (identical feature rows share every
        sample) go to the lowest priority (labelled candidates first).
    bound
        ``(G,)`` the labelled hull at each group (in the samples' frame; ``inf`` where
        undefined): only groups at or below it enter each sample's hull, and
        ``counts.missing`` counts vertices more than each tolerance below it.
    """
    order = np.lexsort((priority, groups.group))
    presorted = bool(np.array_equal(order, np.arange(order.size)))
    E = samples if presorted else samples[:, order]
    sizes = np.diff(np.r_[groups.starts, E.shape[1]])
    gmin = np.minimum.reduceat(E, groups.starts, axis=1)  # (S, G)
    is_min = E == np.repeat(gmin, sizes, axis=1)
    tied = np.flatnonzero(np.count_nonzero(is_min, axis=1) > groups.size)
    if tied.size:  # keep the first minimum of each group (sorted by priority)
        c = np.cumsum(is_min[tied], axis=1)
        before = np.where(groups.starts > 0, c[:, groups.starts - 1], 0)
        is_min[tied] &= (c - np.repeat(before, sizes, axis=1)) == 1
    vertex, hull = _sample_hulls(groups.coords, gmin, bound)
    on = is_min & np.repeat(vertex, sizes, axis=1)
    idx = slice(None) if presorted else order
    counts.on_hull[idx] += np.count_nonzero(on, axis=0)
    if counts.tolerances and bound is not None:
        for t, tol in enumerate(counts.tolerances):
            deep = vertex & (bound - gmin > tol + 1e-7)  # (S, G): that deep below
            counts.missing[t, idx] += np.count_nonzero(
                is_min & np.repeat(deep, sizes, axis=1), axis=0
            )
            counts.changed[t] += np.count_nonzero(deep.any(axis=1))
    counts.hull_sum = counts.hull_sum + hull.sum(axis=0)
    counts.n_samples += E.shape[0]


def tie_priority(labelled: np.ndarray) -> np.ndarray:
    """Priorities for exact ties: labelled candidates first, then by index."""
    n = labelled.size
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(~np.asarray(labelled, dtype=bool), kind="stable")] = np.arange(n)
    return rank


def affine_reference(coords: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """The least-squares affine function of composition through ``energies``, at ``coords``.

    Subtracting an affine function of composition changes neither which points are
    hull vertices nor their distances to the hull; it leaves small numbers (formation
    energy-like), so samples can be held in single precision.
    """
    A = np.column_stack([np.ones(coords.shape[0]), coords])
    coef, *_ = np.linalg.lstsq(A, energies, rcond=None)
    return A @ coef


@dataclass
class GroundStateEstimate:
    """Monte Carlo estimate of the hull from joint posterior samples.

    Attributes
    ----------
    p_on_hull
        ``(N,)`` fraction of samples in which each candidate is a hull vertex.
    hull_distance
        ``(N,)`` posterior mean of the distance above the hull (eV/atom).
    labelled
        ``(N,)`` which candidates carry a label.
    n_samples
        Number of joint samples.
    contenders
        Labelled candidates and those that were the lowest at their composition in at
        least one sample: the only ones that shape the hulls (batch selection works on
        these).
    contender_samples
        ``(S, len(contenders))`` their samples (single precision), less ``shift``.
    shift
        ``(len(contenders),)`` the affine function of composition subtracted from the
        contenders' samples (:func:`affine_reference`).
    tolerance
        eV/atom: a candidate counts as a missing ground state in a sample only when it
        is a vertex of that sample's hull more than this below the labelled hull.
    p_missing
        ``(N,)`` fraction of samples in which each candidate is such a vertex (``None``:
        not counted, :attr:`p_on_hull` is used).
    missing_at
        Expected number of missing ground states at each tolerance counted.
    contender_bound
        ``(len(contenders),)`` the labelled hull at each contender, less ``shift``
        (``inf`` where undefined): every sampled hull lies at or below it.
    changed_at
        At each tolerance counted, the fraction of samples whose hull lies more than
        it below the labelled hull somewhere (``P(the labelled hull is off by more
        than the tolerance)``, at most the expected number of missing ground states).
    """

    p_on_hull: np.ndarray
    hull_distance: np.ndarray
    labelled: np.ndarray
    n_samples: int
    contenders: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    contender_samples: np.ndarray | None = field(default=None, repr=False)
    shift: np.ndarray | None = field(default=None, repr=False)
    tolerance: float = 0.0
    p_missing: np.ndarray | None = field(default=None, repr=False)
    missing_at: dict[float, float] = field(default_factory=dict)
    contender_bound: np.ndarray | None = field(default=None, repr=False)
    changed_at: dict[float, float] = field(default_factory=dict)

    @property
    def _p(self) -> np.ndarray:
        p = self.p_on_hull if self.p_missing is None else self.p_missing
        return p[~self.labelled]

    @property
    def expected_missing(self) -> float:
        """Expected number of ground states not yet labelled that lie more than
        :attr:`tolerance` below the labelled hull: ``sum p_missing`` over unlabelled."""
        return float(self._p.sum())

    @property
    def missing_std_error(self) -> float:
        """Monte Carlo standard error of :attr:`expected_missing` (independent samples)."""
        p = self._p
        return float(np.sqrt(np.sum(p * (1 - p)) / max(self.n_samples, 1)))


def upper_bound_of_hulls(
    coords: np.ndarray, labelled_coords: np.ndarray, labelled_energies: np.ndarray
) -> np.ndarray:
    """The hull of the labelled points, at ``coords``: an upper bound of every sampled hull.

    Every sample holds the labelled candidates at their labels, so its lower hull lies
    at or below theirs wherever theirs is defined (the labelled hull's facets, exact in
    any dimension); outside the labelled compositions' span the bound is ``+inf``.
    """
    coords = np.asarray(coords, dtype=float)
    out = np.full(coords.shape[0], np.inf)
    if labelled_energies.size == 0:
        return out
    groups = CompositionGroups.of_coords(labelled_coords)
    gmin = np.minimum.reduceat(labelled_energies[groups.order], groups.starts)
    vertex, _ = lower_hull(groups.coords, gmin)
    vc, ve = groups.coords[vertex], gmin[vertex]
    r = coords.shape[1]
    if r == 0:
        return np.full(coords.shape[0], ve.min())
    if r == 1:
        inside = (coords[:, 0] >= vc[:, 0].min() - 1e-9) & (coords[:, 0] <= vc[:, 0].max() + 1e-9)
        order = np.argsort(vc[:, 0])
        out[inside] = np.interp(coords[inside, 0], vc[order, 0], ve[order])
        return out
    if vc.shape[0] <= r:
        return out
    from scipy.spatial import Delaunay

    try:  # inside the labelled compositions' span: the labelled hull's facets
        inside = Delaunay(vc).find_simplex(coords, tol=1e-9) >= 0
    except QhullError:
        return out
    _, hull = lower_hull(vc, ve, coords[inside])
    out[inside] = hull + 1e-9
    return out


def _row_classes(X: np.ndarray, decimals: int = 10) -> np.ndarray:
    """Class of each row, identical (rounded) rows sharing one (``(N,)`` integers).

    Rows are sorted by a random projection and compared with their predecessor, so
    identical rows are adjacent (distinct rows share a projection with probability 0).
    """
    R = np.round(np.asarray(X, dtype=float), decimals)
    n = R.shape[0]
    if n == 0 or R.shape[1] == 0:
        return np.zeros(n, dtype=np.int64)
    h = R @ np.random.default_rng(0).standard_normal(R.shape[1])
    order = np.argsort(h, kind="stable")
    Rs = R[order]
    new = np.r_[True, np.any(Rs[1:] != Rs[:-1], axis=1)]
    out = np.empty(n, dtype=np.int64)
    out[order] = np.cumsum(new) - 1
    return out


def estimate_ground_states(
    mean: np.ndarray,
    X: np.ndarray,
    covariance: np.ndarray,
    compositions: np.ndarray,
    labels: np.ndarray | None = None,
    n_samples: int = 1000,
    rng: np.random.Generator | None = None,
    noise_var: float = 0.0,
    chunk: int = 64,
    prune_sigmas: float = 6.0,
    max_stored: int = 150_000_000,
    tolerance: float = 0.0,
    report_tolerances: tuple[float, ...] = (),
    threads: int | None = None,
) -> GroundStateEstimate:
    """Sample hulls from the posterior of a linear surrogate.

    The labels of all candidates are sampled jointly,
    ``y_s = mean + X R z_s + sigma eps_s`` with ``R R^T = S`` the posterior covariance
    of the weights (one factor for all samples), ``z_s ~ N(0, I)`` and label noise
    ``eps_s`` (the model's misfit: one draw per distinct feature row, so candidates the
    model cannot tell apart share it); labelled candidates are put at their labels.

    Only candidates that can reach a hull are sampled: every sampled hull lies below
    the hull of the labels (:func:`upper_bound_of_hulls`), so an unlabelled candidate
    whose mean lies more than ``prune_sigmas`` predictive standard deviations above it
    is left out (it is on a hull with probability below ``Phi(-prune_sigmas)`` per
    sample) and gets ``p_on_hull = 0``; for the same reason, a composition whose
    sampled minimum lies above that bound does not enter the sample's hull. Samples
    are processed in blocks of ``chunk``.

    A candidate counts as a *missing* ground state in a sample when it is unlabelled,
    a vertex of the sample's hull, and more than ``tolerance`` below the hull of the
    labelled candidates: the hull it would make differs from the labelled one by more
    than ``tolerance`` (the largest difference between the two hulls is at such a
    vertex). ``tolerance = 0`` counts every unlabelled vertex.

    Parameters
    ----------
    mean
        ``(N,)`` posterior mean energy per atom of every candidate.
    X
        ``(N, d)`` model rows of every candidate.
    covariance
        ``(d, d)`` posterior covariance of the weights.
    compositions
        ``(N, m)`` atomic fractions.
    labels
        ``(N,)`` labelled energies per atom, ``nan`` where unlabelled.
    n_samples
        Number of joint samples.
    rng
        Random source.
    noise_var
        Label noise variance (the surrogate's aleatoric variance).
    chunk
        Samples per block.
    prune_sigmas
        Pruning threshold (``inf``: sample every candidate).
    max_stored
        Keep all samples (4 bytes each) up to this many; beyond, only the
        contenders' samples are kept, drawn again from the same random streams.
    tolerance
        eV/atom, for :attr:`GroundStateEstimate.expected_missing`.
    report_tolerances
        Further tolerances at which the expected number of missing ground states is
        counted too (:attr:`GroundStateEstimate.missing_at`).
    threads
        Blocks of samples run on this many threads (default: the CPUs, at most 4);
        the result does not depend on it.

    Returns
    -------
    GroundStateEstimate
        Its contenders are the labelled candidates and those lowest at their
        composition in at least one sample, with their samples.
    """
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"hull tolerance must be a finite number >= 0, got {tolerance}")
    rng = np.random.default_rng() if rng is None else rng
    mean = np.asarray(mean, dtype=float)
    X = np.asarray(X, dtype=float)
    n = mean.size
    labels = np.full(n, np.nan) if labels is None else np.asarray(labels, dtype=float)
    labelled = np.isfinite(labels)
    coords_all = composition_coordinates(compositions)
    R = _square_root(covariance)
    XR = X @ R  # (N, rank)
    sd = np.sqrt((XR * XR).sum(axis=1) + noise_var)
    bound = upper_bound_of_hulls(coords_all, coords_all[labelled], labels[labelled])
    keep = np.flatnonzero(labelled | (mean - prune_sigmas * sd <= bound))
    # Sort the kept candidates by composition, labelled first: the samples' columns
    # are then in the order the counts need (no reordering per block).
    first = CompositionGroups.of_coords(coords_all[keep])
    keep = keep[np.lexsort((tie_priority(labelled[keep]), first.group))]
    kl = labelled[keep]
    groups = CompositionGroups.of_coords(coords_all[keep])
    # Work relative to an affine function of composition, in single precision.
    ref = affine_reference(coords_all, mean)
    base = (np.where(labelled, labels, mean) - ref)[keep].astype(np.float32)
    # The labelled hull (no higher than a group's own labels) at each group.
    lab_bound = np.minimum(bound, np.where(labelled, labels, np.inf)) - ref
    gbound = np.minimum.reduceat(lab_bound[keep], groups.starts).astype(np.float32)
    XRk = XR[keep].astype(np.float32)
    urow = _row_classes(X[keep])
    shared = urow.size and int(urow.max()) + 1 < urow.size  # identical rows share noise
    sigma = np.float32(np.sqrt(max(noise_var, 0.0)))
    priority = np.arange(keep.size)  # already sorted: labelled first in each group
    tolerances = tuple(dict.fromkeys((float(tolerance), *map(float, report_tolerances))))

    def draw(gen: np.random.Generator, m: int, cols: np.ndarray | None) -> np.ndarray:
        z = gen.standard_normal((m, XR.shape[1]), dtype=np.float32)
        sel = slice(None) if cols is None else cols
        if sigma > 0:
            eps = gen.standard_normal((m, int(urow.max()) + 1 if shared else keep.size),
                                      dtype=np.float32)
            if shared:
                E = eps[:, urow[sel]]
            else:
                E = eps if cols is None else eps[:, cols]
            E *= sigma
        else:
            E = np.zeros((m, base[sel].size), dtype=np.float32)
        E += base[sel]
        # E += z XR^T, accumulated in place (E^T is Fortran-ordered: BLAS adds into it).
        A = XRk.T if cols is None else np.ascontiguousarray(XRk[cols]).T  # Fortran (r, n)
        E = sgemm(1.0, A, z.T, beta=1.0, c=E.T, overwrite_c=True, trans_a=True).T
        fixed = kl[sel]
        E[:, fixed] = base[sel][fixed]
        return E

    # One random stream per block (children of one seed drawn from ``rng``): blocks
    # run on ``threads`` threads (numpy releases the GIL in the draws and reductions)
    # and the contenders' samples can be drawn again from the same streams.
    starts = list(range(0, n_samples, chunk))
    seeds = np.random.SeedSequence(rng.integers(0, 2**63, size=4).tolist()).spawn(len(starts))
    # Keep every sample when it fits (single precision), else draw the contenders'
    # samples again afterwards.
    keep_all = n_samples * keep.size <= max_stored
    stored = np.empty((n_samples, keep.size), dtype=np.float32) if keep_all else None
    n_threads = max(1, min(threads or min(os.cpu_count() or 1, 4), len(starts)))

    def work(w: int) -> HullCounts:
        part = HullCounts.empty(keep.size, tolerances)
        for i in range(w, len(starts), n_threads):
            m = min(chunk, n_samples - starts[i])
            E = draw(np.random.default_rng(seeds[i]), m, None)
            count_hull_vertices(E, groups, part, priority, gbound)
            if keep_all:
                stored[starts[i] : starts[i] + m] = E
        return part

    if n_threads == 1:
        parts = [work(0)]
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            parts = list(pool.map(work, range(n_threads)))
    counts = HullCounts.merge(parts)
    # Contenders: labelled candidates and those on a sampled hull at least once.
    cont = np.flatnonzero(kl | (counts.on_hull > 0))
    if keep_all:
        samples = stored[:, cont]
    else:
        blocks = [
            draw(np.random.default_rng(seeds[i]), min(chunk, n_samples - start), cont)
            for i, start in enumerate(starts)
        ]
        samples = np.vstack(blocks) if blocks else np.zeros((0, cont.size), np.float32)
    by_index = np.argsort(keep[cont], kind="stable")  # contenders in index order
    return _estimate_from_counts(
        counts, keep, cont[by_index], samples[:, by_index], groups,
        np.where(labelled, labels, mean) - ref, coords_all, labelled, ref, lab_bound,
    )


def _estimate_from_counts(
    counts: HullCounts,
    keep: np.ndarray,
    cont: np.ndarray,
    samples: np.ndarray,
    groups: CompositionGroups,
    shifted_base: np.ndarray,
    coords_all: np.ndarray,
    labelled: np.ndarray,
    ref: np.ndarray,
    shifted_bound: np.ndarray,
) -> GroundStateEstimate:
    """The estimate over all candidates from the counts over the kept ones.

    Pruned candidates are never on a hull. The mean distance above the hull,
    ``E[E_i - hull(c_i)] = mu_i - E[hull(c_i)]``, takes the exact posterior mean
    ``mu_i`` (the label when labelled) and the sampled hulls' mean at ``c_i``.
    """
    n = labelled.size
    s = max(counts.n_samples, 1)
    p = np.zeros(n)
    p[keep] = counts.on_hull / s
    mean_hull = counts.hull_sum / s
    distance = np.empty(n)
    distance[keep] = shifted_base[keep] - mean_hull[groups.group]
    rest = np.setdiff1d(np.arange(n), keep)
    if rest.size:
        distance[rest] = shifted_base[rest] - _mean_hull_at(groups, mean_hull, coords_all[rest])
    p_missing = np.zeros((len(counts.tolerances), n))
    p_missing[:, keep] = counts.missing / s
    p_missing[:, labelled] = 0.0
    missing_at = {t: float(p_missing[i].sum()) for i, t in enumerate(counts.tolerances)}
    changed_at = {t: float(counts.changed[i] / s) for i, t in enumerate(counts.tolerances)}
    return GroundStateEstimate(
        p, distance, labelled, counts.n_samples, keep[cont], samples, ref[keep[cont]],
        tolerance=counts.tolerances[0], p_missing=p_missing[0], missing_at=missing_at,
        contender_bound=shifted_bound[keep[cont]], changed_at=changed_at,
    )


def _mean_hull_at(groups: CompositionGroups, hull: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The mean sampled hull at compositions: looked up where a group sits, else
    interpolated."""
    index = {tuple(c): g for g, c in enumerate(np.round(groups.coords, 8))}
    found = np.array([index.get(tuple(c), -1) for c in np.round(query, 8)], dtype=int)
    out = np.empty(query.shape[0])
    out[found >= 0] = hull[found[found >= 0]]
    if (found < 0).any():
        out[found < 0] = _interpolate(groups.coords, hull, query[found < 0])
    return out


def _interpolate(coords: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation of group values at other compositions."""
    r = coords.shape[1]
    if r == 0 or coords.shape[0] == 1:
        return np.full(query.shape[0], values.min())
    if r == 1:
        order = np.argsort(coords[:, 0])
        return np.interp(query[:, 0], coords[order, 0], values[order])
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

    try:
        out = LinearNDInterpolator(coords, values)(query)
    except QhullError:
        out = np.full(query.shape[0], np.nan)
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = NearestNDInterpolator(coords, values)(query[bad])
    return out


def believer_batch(
    estimate: GroundStateEstimate,
    X: np.ndarray,
    covariance: np.ndarray,
    noise_var: float,
    mean: np.ndarray,
    compositions: np.ndarray,
    selectable: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of ``k`` by sequential fantasised labels (kriging believer).

    The first pick is the selectable candidate most often on the hull. Each pick is
    then believed to come back at its posterior mean: every joint sample is
    conditioned on that label by Matheron's rule, ``E_s <- E_s + c (y_a - E_s(a))``
    with ``c_i = (x_i^T S x_a + noise [x_i = x_a]) / (x_a^T S x_a + noise)`` (label
    noise is shared by identical feature rows, as in the samples), which is exact
    conditioning of Gaussian samples (Wilson et al., "Efficiently sampling functions
    from Gaussian process posteriors", ICML 2020). Hull frequencies are recounted on
    the conditioned samples before the next pick, so a candidate that the first pick
    already explains (a near-copy at its composition, which would be on the hull only
    where the pick is) loses its score. Works on the estimate's contenders only.

    Returns
    -------
    indices, scores
        Candidate indices in pick order and the hull frequency of each when picked.
    """
    cont = estimate.contenders
    sel_c = np.asarray(selectable, dtype=bool)[cont]
    picks: list[int] = []
    scores: list[float] = []
    if cont.size == 0:
        return np.array(picks, dtype=int), np.array(scores)
    E = estimate.contender_samples.astype(float)
    believed = np.asarray(mean, dtype=float)[cont] - estimate.shift
    Xc = np.asarray(X, dtype=float)[cont]
    SX = Xc @ np.asarray(covariance, dtype=float)  # rows x_i^T S
    groups = CompositionGroups.of(np.asarray(compositions)[cont])
    gbound = None  # believed labels only lower the hulls: the labelled hull still bounds
    if estimate.contender_bound is not None:
        gbound = np.minimum.reduceat(estimate.contender_bound[groups.order], groups.starts)
    fixed = estimate.labelled[cont].copy()
    freq = estimate.p_on_hull[cont].copy()
    distance = estimate.hull_distance[cont]  # breaks ties of frequency (nearest first)
    for _ in range(min(k, int(sel_c.sum()))):
        order = np.lexsort((distance, -freq))
        j = int(order[sel_c[order]][0])
        picks.append(int(cont[j]))
        scores.append(float(freq[j]))
        sel_c[j] = False
        same = np.all(np.abs(Xc - Xc[j]) <= 1e-10, axis=1)
        c = (SX @ Xc[j] + noise_var * same) / (SX[j] @ Xc[j] + noise_var)
        c[fixed] = 0.0
        E += np.outer(believed[j] - E[:, j], c)
        fixed[j] = True
        if len(picks) == k or not sel_c.any():
            break
        counts = HullCounts.empty(cont.size)
        count_hull_vertices(E, groups, counts, tie_priority(fixed), gbound)
        freq = counts.on_hull / max(counts.n_samples, 1)
    return np.array(picks, dtype=int), np.array(scores)
