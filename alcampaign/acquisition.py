"""Acquisition rules: score a pool of candidates and select a batch (pure numpy).

Every rule has the same interface, :meth:`AcquisitionRule.select`, which takes the
fitted surrogate's prediction on the pool and returns the chosen indices with their
scores. Rules are chosen in the campaign config by name (see :data:`RULES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from alcampaign.surrogate import Prediction


@dataclass
class Selection:
    """A batch chosen by an acquisition rule.

    Attributes
    ----------
    indices
        Positions in the pool, in the order they were chosen.
    scores
        The score of each chosen candidate when it was chosen.
    """

    indices: np.ndarray
    scores: np.ndarray


class AcquisitionRule(Protocol):
    """Score a pool and select ``k`` candidates from it."""

    name: str

    def select(self, prediction: Prediction, k: int, rng: np.random.Generator) -> Selection: ...


def _top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> Selection:
    """The ``k`` highest scores; ties are broken at random so the choice is unbiased."""
    k = min(k, scores.size)
    if k <= 0:
        return Selection(np.empty(0, dtype=int), np.empty(0))
    jitter = rng.random(scores.size)
    order = np.lexsort((-jitter, -scores))[:k]
    return Selection(order, scores[order])


@dataclass
class MaxVariance:
    """Choose the candidates with the largest epistemic predictive variance."""

    name: str = "max_variance"

    def select(self, prediction: Prediction, k: int, rng: np.random.Generator) -> Selection:
        """Top-``k`` epistemic variances of the pool."""
        return _top_k(prediction.epistemic_var, k, rng)


@dataclass
class RandomChoice:
    """Choose uniformly at random: the baseline every other rule must beat."""

    name: str = "random"

    def select(self, prediction: Prediction, k: int, rng: np.random.Generator) -> Selection:
        """``k`` distinct candidates drawn uniformly; the score is a uniform draw."""
        return _top_k(rng.random(prediction.mean.size), k, rng)


RULES: dict[str, type] = {"max_variance": MaxVariance, "random": RandomChoice}


def make_rule(name: str) -> AcquisitionRule:
    """Build an acquisition rule by its config name."""
    try:
        return RULES[name]()
    except KeyError:
        raise ValueError(
            f"unknown acquisition rule {name!r}; choose one of {sorted(RULES)}"
        ) from None
