"""Acquisition rules."""

import numpy as np
import pytest

from alcampaign.acquisition import MaxVariance, RandomChoice, make_rule
from alcampaign.surrogate import Prediction


def _pred(var):
    var = np.asarray(var, dtype=float)
    return Prediction(np.zeros_like(var), var, np.full_like(var, 0.1))


def test_max_variance_picks_largest_in_order():
    sel = MaxVariance().select(_pred([0.1, 5.0, 0.3, 2.0, 4.0]), 3, np.random.default_rng(0))
    assert sel.indices.tolist() == [1, 4, 3]
    assert sel.scores.tolist() == [5.0, 4.0, 2.0]


def test_batch_larger_than_pool_and_empty():
    rng = np.random.default_rng(0)
    assert sorted(MaxVariance().select(_pred([1.0, 2.0]), 5, rng).indices.tolist()) == [0, 1]
    assert MaxVariance().select(_pred([1.0]), 0, rng).indices.size == 0


def test_random_is_distinct_and_seeded():
    a = RandomChoice().select(_pred(np.ones(50)), 10, np.random.default_rng(3)).indices
    b = RandomChoice().select(_pred(np.ones(50)), 10, np.random.default_rng(3)).indices
    assert len(set(a.tolist())) == 10 and a.tolist() == b.tolist()


def test_ties_are_broken_at_random():
    picks = {
        int(MaxVariance().select(_pred(np.ones(20)), 1, np.random.default_rng(s)).indices[0])
        for s in range(20)
    }
    assert len(picks) > 3


def test_make_rule():
    assert make_rule("max_variance").name == "max_variance"
    with pytest.raises(ValueError, match="unknown acquisition rule"):
        make_rule("nope")
