"""Sampled convex hulls: P(on hull) against exact enumeration, hulls in any dimension,
diverse batches, the end members and the missing-ground-states criterion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from alcampaign.config import CampaignConfig
from alcampaign.science.acquisition import GroundState, Pool
from alcampaign.science.hull import (
    composition_coordinates,
    end_member_indices,
    estimate_ground_states,
    lower_hull,
)
from alcampaign.science.learning import initial_design
from alcampaign.science.stopping import Decision, judge_missing_ground_states
from alcampaign.science.surrogate import Prediction


def _brute_vertices(x: np.ndarray, e: np.ndarray) -> set[int]:
    """Lower-hull vertices of points on a line, by checking every point against every pair."""
    out = set()
    for i in range(x.size):
        if any(x[j] == x[i] and e[j] < e[i] for j in range(x.size)):
            continue
        below = False
        for a, b in itertools.combinations(range(x.size), 2):
            lo, hi = sorted((a, b), key=lambda t: x[t])
            if x[lo] < x[i] < x[hi]:
                t = (x[i] - x[lo]) / (x[hi] - x[lo])
                if e[i] >= (1 - t) * e[lo] + t * e[hi] - 1e-12:
                    below = True
        if not below:
            out.add(i)
    return out


def test_binary_hull_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = np.unique(rng.integers(0, 9, 7)) / 8
        e = rng.normal(size=x.size)
        vertex, hull = lower_hull(x[:, None], e)
        assert set(np.flatnonzero(vertex)) == _brute_vertices(x, e)
        assert np.all(e - hull >= -1e-12)
        assert np.allclose(hull[vertex], e[vertex])


def test_ternary_hull_matches_pymatgen():
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    rng = np.random.default_rng(1)
    formulas, comps, energies = [], [], []
    for a in range(5):
        for b in range(5 - a):
            c = 4 - a - b
            f = {"Li": a, "Fe": b, "O": c}
            corner = max(a, b, c) == 4
            formulas.append(f)
            comps.append([a / 4, b / 4, c / 4])
            energies.append(0.0 if corner else float(rng.normal(-0.2, 0.15)))
    entries = [
        PDEntry(Composition({k: v for k, v in f.items() if v}), e * 4)
        for f, e in zip(formulas, energies, strict=True)
    ]
    pd = PhaseDiagram(entries)
    expected = {i for i, en in enumerate(entries) if en in pd.stable_entries}
    coords = composition_coordinates(np.array(comps))
    assert coords.shape[1] == 2
    vertex, hull = lower_hull(coords, np.array(energies))
    assert set(np.flatnonzero(vertex)) == expected
    for i, en in enumerate(entries):
        assert energies[i] - hull[i] == pytest.approx(pd.get_e_above_hull(en), abs=1e-9)


def test_composition_coordinates_drop_fixed_sublattices():
    # A fixed anion: Li_x Co O2 spans one dimension, not two.
    x = np.linspace(0, 1, 5)
    comps = np.column_stack([x, np.ones(5), 2 * np.ones(5)]) / (3 + x)[:, None]
    assert composition_coordinates(comps).shape == (5, 1)


def _brute_vertex_events(xs: np.ndarray, E: np.ndarray) -> np.ndarray:
    """``(P, n)`` vertex indicators of many energy vectors at once, by the definition:
    a point is a lower-hull vertex iff it is below every other point at its composition
    and strictly below every chord between points on either side of it."""
    P, n = E.shape
    on = np.ones((P, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            if j != i and xs[j] == xs[i]:
                on[:, i] &= E[:, i] < E[:, j]
        for a, b in itertools.combinations(range(n), 2):
            lo, hi = sorted((a, b), key=lambda t: xs[t])
            if xs[lo] < xs[i] < xs[hi]:
                t = (xs[i] - xs[lo]) / (xs[hi] - xs[lo])
                on[:, i] &= E[:, i] < (1 - t) * E[:, lo] + t * E[:, hi]
    return on


def _reference_p_on_hull(x, mean, factor, fixed_x, fixed_e, log2_points=18):
    """P(on hull) of jointly Gaussian candidates by enumerating vertex events on a
    quasi-Monte Carlo quadrature of the Gaussian.

    2^18 scrambled Sobol points mapped through a factor of the covariance
    (``factor factor^T``); at each, every candidate's vertex event is decided by the
    brute-force definition (:func:`_brute_vertex_events`). The quadrature error (~1e-4)
    is far below the Monte Carlo error of the estimate under test.
    """
    from scipy.stats import norm, qmc

    u = qmc.Sobol(factor.shape[1], scramble=True, seed=123).random_base2(log2_points)
    E = mean + norm.ppf(np.clip(u, 1e-12, 1 - 1e-12)) @ factor.T
    xs = np.r_[fixed_x, x]
    full = np.column_stack([np.broadcast_to(fixed_e, (E.shape[0], fixed_e.size)), E])
    return _brute_vertex_events(xs, full)[:, fixed_x.size :].mean(axis=0)


def test_reference_vertex_sets_match_brute_force():
    rng = np.random.default_rng(10)
    xs = np.array([0.0, 1.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.625])
    for _ in range(200):
        e = np.r_[0.0, 0.0, rng.normal(-0.05, 0.03, 6)]
        groups = {}
        for i, xi in enumerate(xs):  # only the lowest at a composition can be a vertex
            if xi not in groups or e[i] < e[groups[xi]]:
                groups[xi] = i
        lowest = np.array(sorted(groups.values()))
        vertex, _ = lower_hull(xs[:, None], e)
        brute = {int(lowest[j]) for j in _brute_vertices(xs[lowest], e[lowest])}
        assert set(np.flatnonzero(vertex)) == brute


def test_p_on_hull_matches_exact_enumeration():
    """Six candidates with a known joint Gaussian posterior (rank 4; two pairs share a
    composition), end members labelled: the sampled P(on hull) of every candidate is
    within 3 Monte Carlo standard errors of the reference (vertex sets enumerated on a
    2^18-point quadrature of the same Gaussian)."""
    x = np.array([0.25, 0.25, 0.5, 0.5, 0.75, 0.625])
    comps = np.column_stack([1 - np.r_[0.0, 1.0, x], np.r_[0.0, 1.0, x]])
    d = 4
    rng = np.random.default_rng(2)
    X = np.column_stack([np.ones(8), rng.normal(size=(8, d - 1))])
    A = rng.normal(size=(d, d)) * 0.02
    S = A @ A.T + 1e-4 * np.eye(d)
    mean = X @ np.array([-0.05, 0.01, -0.02, 0.0])
    labels = np.full(8, np.nan)
    labels[:2] = 0.0  # the end members, labelled
    n = 4000
    est = estimate_ground_states(mean, X, S, comps, labels, n, np.random.default_rng(3))
    reference = _reference_p_on_hull(
        x, mean[2:], X[2:] @ np.linalg.cholesky(S), np.array([0.0, 1.0]), np.zeros(2)
    )
    p = est.p_on_hull[2:]
    se = np.sqrt(np.maximum(reference * (1 - reference), 1e-12) / n)
    assert np.all(np.abs(p - reference) <= 3 * se + 1e-9), (p, reference)
    assert np.sum((reference > 0.05) & (reference < 0.95)) >= 3  # not a trivial case
    assert est.p_on_hull[:2].tolist() == [1.0, 1.0]  # labelled end members


def test_pruned_candidates_cannot_reach_the_hull():
    rng = np.random.default_rng(4)
    n = 200
    x = rng.integers(0, 9, n) / 8
    x[:2] = [0, 1]
    comps = np.column_stack([1 - x, x])
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 3))])
    S = 1e-6 * np.eye(4)
    mean = X @ np.array([0.0, 0.01, 0.0, 0.0]) + 0.5 * (rng.random(n) > 0.5)
    labels = np.full(n, np.nan)
    labels[:2] = 0.0
    kw = dict(noise_var=1e-4, n_samples=300)
    full = estimate_ground_states(mean, X, S, comps, labels, rng=np.random.default_rng(5),
                                  prune_sigmas=np.inf, **kw)
    pruned = estimate_ground_states(mean, X, S, comps, labels, rng=np.random.default_rng(5),
                                    **kw)
    far = mean > 0.4
    assert np.all(pruned.p_on_hull[far] == 0) and np.all(full.p_on_hull[far] == 0)
    assert np.allclose(pruned.hull_distance[far], full.hull_distance[far], atol=2e-3)


def _duplicate_pool(noise_var: float):
    """End members labelled at 0; three exact copies deep below the line at x = 0.5, and
    two independent candidates at other compositions that are often on the hull."""
    x = np.array([0.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.75])
    comps = np.column_stack([1 - x, x])
    X = np.array(
        [
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0.5, 1, 0],
            [1, 0.5, 1, 0],
            [1, 0.5, 1, 0],
            [1, 0.25, 0, 1],
            [1, 0.75, 0, -1],
        ],
        dtype=float,
    )
    w = np.array([0.0, 0.0, -0.05, -0.01])
    S = np.diag([1e-6, 1e-6, 1e-4, 4e-4])
    labels = np.full(7, np.nan)
    labels[:2] = 0.0
    mean = X @ w
    mean[:2] = 0.0
    pred = Prediction(mean, ((X @ S) * X).sum(1), np.full(7, noise_var))
    return Pool(pred, X=X, covariance=S, noise_var=noise_var, compositions=comps,
                labels=labels)


@pytest.mark.parametrize("noise_var", [0.0, 1e-4])
def test_batch_never_holds_two_candidates_at_one_vertex(noise_var):
    pool = _duplicate_pool(noise_var)
    sel = GroundState(n_samples=500).select(pool, 3, np.random.default_rng(6))
    picked = set(sel.indices.tolist())
    assert len(picked & {2, 3, 4}) == 1  # one of the copies, never two
    assert picked - {2, 3, 4} == {5, 6}
    assert not picked & {0, 1}  # labelled candidates are never asked again
    # The copies share every sample: one sample never puts two of them on the hull.
    est = estimate_ground_states(
        pool.prediction.mean, pool.X, pool.covariance, pool.compositions, pool.labels, 500,
        np.random.default_rng(7), noise_var,
    )
    assert est.p_on_hull[2:5].sum() <= 1.0 + 1e-12


def test_top_pick_is_most_probable_ground_state():
    pool = _duplicate_pool(1e-4)
    sel = GroundState(n_samples=500).select(pool, 1, np.random.default_rng(8))
    assert sel.indices[0] in (2, 3, 4)
    assert sel.scores[0] > 0.9


def test_end_members_binary_and_ternary():
    x = np.array([0.5, 0.0, 0.25, 1.0, 0.0])
    comps = np.column_stack([1 - x, x])
    assert end_member_indices(comps).tolist() == [1, 3]
    assert end_member_indices(comps, np.array([0, 5.0, 0, 0, 1.0])).tolist() == [3, 4]
    tern = np.array([[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]])
    assert end_member_indices(tern).tolist() == [0, 2, 3]


def test_initial_design_starts_with_end_members():
    x = np.linspace(0, 1, 9)
    comps = np.column_stack([1 - x, x])
    chosen, n_end = initial_design(4, 9, np.random.default_rng(0), comps)
    assert chosen[:2] == [0, 8] and n_end == 2 and len(set(chosen)) == 4
    chosen, n_end = initial_design(4, 9, np.random.default_rng(0), comps, end_members=False)
    assert n_end == 0 and len(set(chosen)) == 4
    config = CampaignConfig.model_validate({"name": "t", "system": {"structure": "x.cif"}})
    assert config.initial_design.end_members  # on by default


def test_missing_ground_states_criterion():
    d = Decision(False, None, [])
    judge_missing_ground_states(d, 0.05, 0.1, n_oracle_calls=12, min_labels=10)
    assert d.stop and "ground states" in d.reason
    assert d.criteria[-1].name == "missing_ground_states" and d.criteria[-1].met
    d = judge_missing_ground_states(Decision(False, None, []), 0.05, 0.1, 8, 10)
    assert not d.stop  # too few labels yet
    d = judge_missing_ground_states(Decision(False, None, []), 0.5, 0.1, 20, 10)
    assert not d.stop
    d = judge_missing_ground_states(Decision(False, None, []), None, 0.1, 20, 10)
    assert not d.stop and d.criteria[-1].value is None
    d = judge_missing_ground_states(Decision(True, "budget", []), 0.0, 0.1, 20, 10)
    assert d.reason == "budget"


def test_expected_missing_is_sum_over_unlabelled():
    pool = _duplicate_pool(1e-4)
    est = estimate_ground_states(
        pool.prediction.mean, pool.X, pool.covariance, pool.compositions, pool.labels, 400,
        np.random.default_rng(9), 1e-4,
    )
    assert est.expected_missing == pytest.approx(est.p_on_hull[2:].sum())
    assert est.missing_std_error > 0


def test_replayed_samples_equal_stored_samples():
    pool = _duplicate_pool(1e-4)
    args = (pool.prediction.mean, pool.X, pool.covariance, pool.compositions, pool.labels, 300)
    a = estimate_ground_states(*args, np.random.default_rng(11), 1e-4)
    b = estimate_ground_states(*args, np.random.default_rng(11), 1e-4, max_stored=0)
    assert np.array_equal(a.contenders, b.contenders)
    assert np.array_equal(a.contender_samples, b.contender_samples)
    assert np.array_equal(a.p_on_hull, b.p_on_hull)


def _polymorph_pool(second_mean: float):
    """End members and a ground state at x = 0.5 labelled (0, 0, -50 meV/atom); an
    unlabelled polymorph at x = 0.5 predicted at -49 meV/atom and a candidate at
    x = 0.25 predicted at ``second_mean``, both with an independent 2 meV/atom std."""
    x = np.array([0.0, 1.0, 0.5, 0.5, 0.25])
    comps = np.column_stack([1 - x, x])
    X = np.eye(5)
    S = np.diag([1e-8, 1e-8, 1e-8, 0.002**2, 0.002**2])
    mean = np.array([0.0, 0.0, -0.05, -0.049, second_mean])
    labels = np.array([0.0, 0.0, -0.05, np.nan, np.nan])
    return mean, X, S, comps, labels


def test_missing_with_tolerance_matches_closed_form():
    """A candidate below the labelled hull is a vertex of the sample's hull, so
    P(missing at tolerance t) = Phi((hull - t - mu) / sigma) for one uncertain candidate;
    the fraction of samples whose hull moves by more than t is the same."""
    from scipy.stats import norm

    mean, X, S, comps, labels = _polymorph_pool(-0.01)  # x = 0.25: 15 meV above the hull
    n = 20000
    est = estimate_ground_states(mean, X, S, comps, labels, n, np.random.default_rng(12),
                                 tolerance=0.001, report_tolerances=(0.0, 0.003))
    for t in (0.0, 0.001, 0.003):
        exact = norm.cdf((-0.05 - t + 0.049) / 0.002)
        se = np.sqrt(exact * (1 - exact) / n)
        assert est.missing_at[t] == pytest.approx(exact, abs=3 * se)
        assert est.changed_at[t] == pytest.approx(est.missing_at[t])
    assert est.expected_missing == est.missing_at[0.001]
    assert est.p_on_hull[3] == pytest.approx(norm.cdf(-0.5), abs=3 * np.sqrt(0.25 / n))
    assert est.p_missing[labels == labels].sum() == 0  # labelled: never missing


@pytest.mark.parametrize(
    ("second_mean", "tolerance", "stops"),
    [
        (-0.01, 0.005, True),  # only a polymorph 1 meV/atom above the labelled one
        (-0.01, 0.0, False),  # without a tolerance the polymorph holds the campaign
        (-0.04, 0.005, False),  # a real ground state 15 meV/atom below the labelled hull
    ],
    ids=["degenerate-polymorph", "no-tolerance", "real-missing"],
)
def test_near_degenerate_polymorph_does_not_block_stopping(second_mean, tolerance, stops):
    mean, X, S, comps, labels = _polymorph_pool(second_mean)
    est = estimate_ground_states(mean, X, S, comps, labels, 2000, np.random.default_rng(13),
                                 tolerance=tolerance)
    d = judge_missing_ground_states(Decision(False, None, []), est.expected_missing, 0.1, 20,
                                    10)
    assert d.stop == stops, est.expected_missing


def test_hull_tolerance_is_validated():
    mean, X, S, comps, labels = _polymorph_pool(-0.01)
    with pytest.raises(ValueError, match="tolerance"):
        estimate_ground_states(mean, X, S, comps, labels, 10, tolerance=-0.001)
    with pytest.raises(ValueError, match="hull_tolerance"):
        CampaignConfig.model_validate(
            {"name": "t", "system": {"structure": "x.cif"}, "stopping": {"hull_tolerance": -1}}
        )
    config = CampaignConfig.model_validate({"name": "t", "system": {"structure": "x.cif"}})
    assert config.stopping.hull_tolerance == 0.005


def _ternary_pool(n: int = 1500, seed: int = 0):
    """Compositions of cells of up to 12 atoms of a ternary (many on the edges and on
    lines inside the triangle), pure elements at 0 and random energies below."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 13, n)
    a = np.floor(rng.random(n) * (sizes + 1))
    b = np.floor(rng.random(n) * (sizes - a + 1))
    comps = np.column_stack([a, b, sizes - a - b]) / sizes[:, None]
    comps = np.vstack([np.eye(3), comps[comps.max(axis=1) < 1 - 1e-9]])  # one per corner
    e = rng.normal(-0.05, 0.04, len(comps)) * (comps.max(axis=1) < 1 - 1e-9)
    return comps, e


def _pymatgen_stable(comps: np.ndarray, e: np.ndarray) -> np.ndarray:
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    entries = [PDEntry(Composition(dict(zip(("Li", "Fe", "O"), 12 * c, strict=True))), 12 * ei)
               for c, ei in zip(comps, e, strict=True)]
    pd = PhaseDiagram(entries)
    return np.array([en in pd.stable_entries for en in entries]), pd, entries


def test_sampled_ternary_vertices_match_pymatgen():
    """With no posterior spread every sample is the same: P(on hull) is 1 exactly on
    pymatgen's stable entries and 0 elsewhere, though many compositions lie on the
    triangle's edges and on lines through it (no vertex from round-off)."""
    comps, e = _ternary_pool()
    n = len(e)
    labels = np.full(n, np.nan)
    labels[:3] = 0.0
    est = estimate_ground_states(e, np.zeros((n, 1)), np.zeros((1, 1)), comps, labels, 8,
                                 np.random.default_rng(0))
    stable, _, _ = _pymatgen_stable(comps, e)
    assert np.array_equal(est.p_on_hull == 1.0, stable)
    assert set(np.unique(est.p_on_hull)) <= {0.0, 1.0}


def test_labelled_hull_bound_is_the_labelled_hull_in_a_ternary():
    from alcampaign.science.hull import upper_bound_of_hulls

    comps, e = _ternary_pool(300, seed=1)
    coords = composition_coordinates(comps)
    lab = np.r_[0, 1, 2, np.arange(3, len(e), 3)]
    bound = upper_bound_of_hulls(coords, coords[lab], e[lab])
    _, pd, entries = _pymatgen_stable(comps[lab], e[lab])
    pd_hull = np.array([e[i] - pd.get_e_above_hull(en) for i, en in zip(lab, entries,
                                                                        strict=True)])
    assert np.allclose(bound[lab], pd_hull, atol=1e-8)
    from pymatgen.core import Composition

    hull_lab = np.array([pd.get_hull_energy_per_atom(Composition(dict(zip(
        ("Li", "Fe", "O"), 12 * c, strict=True)))) for c in comps])
    assert np.allclose(bound, hull_lab, atol=1e-8)
