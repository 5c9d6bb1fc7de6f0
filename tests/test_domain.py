"""Domain of applicability against closed forms."""

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis

from alcampaign.science.domain import ApplicabilityDomain


def test_leverage_equals_hat_matrix_diagonal():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(25, 5))
    dom = ApplicabilityDomain().fit(X)
    H = X @ np.linalg.inv(X.T @ X) @ X.T
    np.testing.assert_allclose(dom.leverage(X), np.diag(H), rtol=1e-10)
    assert dom.leverage(X).sum() == pytest.approx(5.0)  # trace of the hat matrix = rank


def test_mahalanobis_equals_scipy_and_handles_constant_columns():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 3))
    dom = ApplicabilityDomain().fit(X)
    VI = np.linalg.inv(np.cov(X.T))
    q = rng.normal(size=(4, 3))
    ref = [mahalanobis(x, X.mean(0), VI) for x in q]
    np.testing.assert_allclose(dom.mahalanobis(q), ref, rtol=1e-8)
    # A constant column (the zerolet) changes nothing.
    X1 = np.column_stack([np.ones(50), X])
    q1 = np.column_stack([np.ones(4), q])
    np.testing.assert_allclose(ApplicabilityDomain().fit(X1).mahalanobis(q1), ref, rtol=1e-8)


def test_flags_points_outside_the_training_domain():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 4))
    dom = ApplicabilityDomain().fit(X)
    inside = dom.assess(rng.normal(size=(100, 4)))["flagged"].mean()
    outside = dom.assess(8 + rng.normal(size=(20, 4)))
    assert inside < 0.1 and outside["flagged"].all()
    assert (outside["leverage"] > dom.leverage_limit_).all()
    fixed = ApplicabilityDomain(mahalanobis_threshold=100.0, leverage_threshold=100.0).fit(X)
    assert not fixed.assess(8 + rng.normal(size=(5, 4)))["flagged"].any()


def test_ridge_flags_a_direction_no_label_explored():
    """Fewer labels than features: the pseudo-inverse projects an unexplored direction
    out (distance 0, leverage 0); the ridge counts it as far away."""
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    X = rng.normal(size=(6, 4)) @ basis[:, :4].T  # 6 labels spanning 4 of 12 directions
    probe = X.mean(axis=0) + 10 * basis[:, 7]  # 10 units along an unexplored direction
    blind = ApplicabilityDomain().fit(X)
    assert blind.mahalanobis(probe[None])[0] == pytest.approx(0.0, abs=1e-6)
    assert not blind.assess(probe[None])["flagged"][0]
    ridged = ApplicabilityDomain(ridge=1e-3).fit(X)
    out = ridged.assess(probe[None])
    assert out["flagged"][0] and out["mahalanobis"][0] > 10 * ridged.mahalanobis_limit_
    assert not ridged.assess(X)["flagged"].any()  # the labels themselves stay inside
