"""Acquisition rules against closed forms and exhaustive search."""

import itertools

import numpy as np
import pytest

from alcampaign.science.acquisition import (
    CostAware,
    DOptimal,
    LowerConfidenceBound,
    MaxVariance,
    MutualInformation,
    Pool,
    RandomChoice,
    batch_information,
    coverage_metrics,
    greedy_d_optimal,
    hull_energies,
    make_rule,
    multi_fidelity_rows,
    mutual_information,
)
from alcampaign.science.surrogate import BayesianLinearRegression, Prediction


def _pool(var, ale=0.1):
    var = np.asarray(var, dtype=float)
    return Pool(Prediction(np.zeros_like(var), var, np.full_like(var, ale)))


def test_max_variance_picks_largest_in_order():
    sel = MaxVariance().select(_pool([0.1, 5.0, 0.3, 2.0, 4.0]), 3, np.random.default_rng(0))
    assert sel.indices.tolist() == [1, 4, 3]
    assert sel.scores.tolist() == [5.0, 4.0, 2.0]


def test_batch_larger_than_pool_and_empty():
    rng = np.random.default_rng(0)
    assert sorted(MaxVariance().select(_pool([1.0, 2.0]), 5, rng).indices.tolist()) == [0, 1]
    assert MaxVariance().select(_pool([1.0]), 0, rng).indices.size == 0


def test_random_is_distinct_and_seeded():
    a = RandomChoice().select(_pool(np.ones(50)), 10, np.random.default_rng(3)).indices
    b = RandomChoice().select(_pool(np.ones(50)), 10, np.random.default_rng(3)).indices
    assert len(set(a.tolist())) == 10 and a.tolist() == b.tolist()


def test_ties_are_broken_at_random():
    picks = {
        int(MaxVariance().select(_pool(np.ones(20)), 1, np.random.default_rng(s)).indices[0])
        for s in range(20)
    }
    assert len(picks) > 3


def test_mutual_information_formula():
    se2, sa2 = np.array([0.0, 1.0, 3.0]), np.array([1.0, 1.0, 0.5])
    np.testing.assert_allclose(mutual_information(se2, sa2), 0.5 * np.log(1 + se2 / sa2))
    pool = Pool(Prediction(np.zeros(3), np.array([1.0, 1.0, 0.2]), np.array([4.0, 0.5, 0.01])))
    sel = MutualInformation().select(pool, 3, np.random.default_rng(0))
    assert sel.indices.tolist() == [2, 1, 0]  # high variance alone is not enough
    # MI equals the entropy drop of the weights: 1/2 log det of the posterior ratio.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 3))
    model = BayesianLinearRegression(1.0, 20.0).fit(X, rng.normal(size=10))
    x = rng.normal(size=(1, 3))
    S = model.covariance_
    S_new = np.linalg.inv(np.linalg.inv(S) + 20.0 * x.T @ x)
    drop = 0.5 * (np.linalg.slogdet(S)[1] - np.linalg.slogdet(S_new)[1])
    p = model.predict(x)
    assert mutual_information(p.epistemic_var, p.aleatoric_var)[0] == pytest.approx(drop)


def _random_design(seed, n=12, d=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=(n, 1))
    M = rng.normal(size=(d, d))
    return X, M @ M.T / d + 0.1 * np.eye(d)


def test_greedy_d_optimal_gains_add_up_to_the_batch_information():
    X, S = _random_design(0)
    idx, gains = greedy_d_optimal(X, S, 0.3, 4)
    assert sum(gains) == pytest.approx(batch_information(X[idx], S, 0.3), rel=1e-10)


def test_greedy_d_optimal_against_exhaustive_search():
    ratios, exact = [], 0
    for seed in range(30):
        X, S = _random_design(seed)
        k = 3
        idx, _ = greedy_d_optimal(X, S, 0.3, k)
        greedy = batch_information(X[idx], S, 0.3)
        best = max(
            batch_information(X[list(c)], S, 0.3) for c in itertools.combinations(range(len(X)), k)
        )
        ratios.append(greedy / best)
        exact += greedy >= best - 1e-10
    assert min(ratios) >= 1 - 1 / np.e
    assert exact >= 15  # equal to the optimum on most pools


def test_rank_one_updates_equal_naive_recomputation():
    X, S = _random_design(3, n=40, d=6)
    idx, _ = greedy_d_optimal(X, S, 0.2, 8)
    chosen = []
    for _ in range(8):  # naive: a log-determinant per candidate per step
        scores = [
            -np.inf if i in chosen else batch_information(X[[*chosen, i]], S, 0.2)
            for i in range(len(X))
        ]
        chosen.append(int(np.argmax(scores)))
    assert idx.tolist() == chosen


def test_d_optimal_batch_is_more_diverse_than_top_variance():
    # Two tight clusters: top-variance picks all from the wider one, D-optimal spreads.
    rng = np.random.default_rng(0)
    a = np.array([3.0, 0.0]) + 0.01 * rng.normal(size=(10, 2))
    b = np.array([0.0, 2.0]) + 0.01 * rng.normal(size=(10, 2))
    X = np.vstack([a, b])
    S = np.eye(2)
    pred = Prediction(np.zeros(20), ((X @ S) * X).sum(1), np.full(20, 0.01))
    pool = Pool(pred, X=X, covariance=S, noise_var=0.01)
    top = MaxVariance().select(pool, 2, np.random.default_rng(0)).indices
    dopt = DOptimal().select(pool, 2, np.random.default_rng(0)).indices
    assert all(i < 10 for i in top)
    assert sorted(i < 10 for i in dopt) == [False, True]


def test_cost_aware_prefers_cheap_information_then_the_dear_correction():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    cheap, dear = (
        multi_fidelity_rows(X, "chgnet", "chgnet"),
        multi_fidelity_rows(X, "emt", "chgnet"),
    )
    assert np.allclose(cheap[:, 3:], 0) and np.allclose(dear[:, 3:], X)
    # Prior: shared part unknown, correction well known: cheap labels are worth it.
    S = np.diag([1.0, 1.0, 1.0, 1e-3, 1e-3, 1e-3])
    pool = Pool(
        Prediction(np.zeros(30), np.ones(30), np.ones(30)),
        fidelity_rows={
            "chgnet": (cheap, 0.01, 0.05, np.ones(30, bool)),
            "emt": (dear, 0.01, 1.0, np.ones(30, bool)),
        },
        joint_covariance=S,
    )
    sel = CostAware().select(pool, 3, np.random.default_rng(0))
    assert sel.fidelities == ["chgnet"] * 3
    # Once the shared part is known, the correction is what is left to learn.
    S = np.diag([1e-6, 1e-6, 1e-6, 1.0, 1.0, 1.0])
    pool.joint_covariance = S
    sel = CostAware().select(pool, 2, np.random.default_rng(0))
    assert sel.fidelities == ["emt", "emt"] and len(set(sel.indices.tolist())) == 2
    # Candidates already answered at a fidelity are not asked again there.
    pool.fidelity_rows["emt"][3][:] = False
    pool.fidelity_rows["emt"][3][7] = True
    sel = CostAware().select(pool, 3, np.random.default_rng(0))
    assert [
        (int(i), f) for i, f in zip(sel.indices, sel.fidelities, strict=True) if f == "emt"
    ] == [(7, "emt")]


def test_hull_energies_match_pymatgen():
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    rng = np.random.default_rng(0)
    x = np.r_[0.0, 1.0, rng.uniform(0, 1, 30)]
    e = np.r_[0.0, 0.0, -0.1 * np.sin(np.pi * x[2:]) + 0.03 * rng.normal(size=30)]
    comps = np.column_stack([x, 1 - x])
    ours = e - hull_energies(comps, e)
    entries = [
        PDEntry(Composition({"Au": xi, "Cu": 1 - xi}), ei) for xi, ei in zip(x, e, strict=True)
    ]
    pd = PhaseDiagram(entries)
    theirs = np.array([pd.get_e_above_hull(en) for en in entries])
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


def test_lower_confidence_bound_finds_hull_candidates():
    x = np.linspace(0, 1, 11)
    comps = np.column_stack([x, 1 - x])
    mean = np.where(np.isclose(x, 0.5), -0.05, 0.0) + 0.01 * x * (1 - x)
    var = np.full(11, 1e-8)
    var[3] = 0.04**2  # uncertain candidate whose optimistic energy is below the hull
    pool = Pool(Prediction(mean, var, np.full(11, 1e-6)), compositions=comps)
    sel = LowerConfidenceBound(kappa=2.0).select(pool, 2, np.random.default_rng(0))
    assert sel.indices[0] == 3 and sel.indices[1] in (0, 5, 10)  # then a hull vertex


def test_coverage_metrics():
    pool = np.array([[0.0], [1.0], [2.0], [10.0]])
    m = coverage_metrics(pool, pool[:2], radius=1.0)
    assert m["coverage"] == 0.75 and m["min_pairwise_distance"] == 1.0
    assert m["kernel_logdet"] == pytest.approx(np.log(1 - np.exp(-1.0)), rel=1e-6)
    spread = coverage_metrics(pool, pool[[0, 3]], radius=1.0)
    assert spread["kernel_logdet"] > m["kernel_logdet"]


def test_make_rule():
    assert make_rule("max_variance").name == "max_variance"
    assert make_rule("lower_confidence_bound", kappa=1.0).kappa == 1.0
    with pytest.raises(ValueError, match="unknown acquisition rule"):
        make_rule("nope")
    with pytest.raises(ValueError, match="covariance"):
        DOptimal().select(_pool([1.0]), 1, np.random.default_rng(0))


def _eager_greedy(X, S, noise, k, costs, available):
    """Reference: every score recomputed from the updated covariance at every pick."""
    S = S.copy()
    available = available.copy()
    picks = []
    for _ in range(k):
        v = ((X @ S) * X).sum(1)
        score = np.where(available, 0.5 * np.log1p(v / noise) / costs, -np.inf)
        j = int(np.argmax(score))
        picks.append(j)
        available[j] = False
        u = S @ X[j]
        S -= np.outer(u, u) / (noise[j] + v[j])
    return picks


def test_lazy_greedy_equals_eager_greedy_with_costs_and_masks():
    for seed in range(10):
        X, S = _random_design(seed, n=200, d=8)
        rng = np.random.default_rng(seed)
        noise = rng.uniform(0.05, 0.5, 200)
        costs = rng.choice([0.05, 1.0], 200)
        available = rng.random(200) < 0.8
        idx, gains = greedy_d_optimal(X, S, noise, 12, costs, available)
        assert idx.tolist() == _eager_greedy(X, S, noise, 12, costs, available)
        assert available[idx].all() and np.all(np.diff(gains / costs[idx]) <= 1e-12)
