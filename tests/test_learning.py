"""The controller's pure step (``learning.decide``) on small arrays, without any store."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from alcampaign.science.learning import (
    LearningSettings,
    StepInputs,
    TrainingData,
    decide,
)
from alcampaign.science.stopping import StoppingThresholds

N, D = 40, 4


def _pool(seed: int = 0, noise: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """40 candidates with an intercept column; energies linear in the features."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(N), rng.normal(size=(N, D - 1))])
    y = X @ np.array([-0.2, 0.03, -0.01, 0.02]) + rng.normal(0.0, noise, N)
    return X, y


def _inputs(X, y, labelled, iteration=1, n_calls=None, **kw) -> StepInputs:
    idx = np.asarray(labelled, dtype=int)
    taken = np.zeros(len(X), dtype=bool)
    taken[idx] = True
    return StepInputs(
        TrainingData(X, idx, y[idx]),
        iteration=iteration,
        n_oracle_calls=len(idx) if n_calls is None else n_calls,
        dear_taken=taken,
        **kw,
    )


def _settings(**kw) -> LearningSettings:
    thresholds = kw.pop("thresholds", StoppingThresholds(max_oracle_calls=30, rmse_target=1e-9))
    return LearningSettings(thresholds, **{"seed": 3, "batch_size": 3, "cv_folds": 4, **kw})


def test_go_decision_asks_a_batch_of_free_candidates():
    X, y = _pool()
    labelled = range(8)
    step = decide(_settings(), _inputs(X, y, labelled))
    assert not step.stop and step.verdict.reason is None
    assert step.rule == "max_variance"
    picked = [r.index for r in step.requests]
    assert len(picked) == 3 == len(set(picked))
    assert not set(picked) & set(labelled)
    assert not any(r.cheap for r in step.requests)
    # Every number the documents need is there.
    assert step.metrics["rmse"] is not None and step.metrics["rmse"] < 0.02
    assert step.fitted is not None and step.fitted.cv.mean.shape == (8,)
    assert step.domain["flagged"].shape == (N,)
    assert set(step.diversity) and step.flagged.ndim == 1
    assert step.verdict.criteria[0].name == "budget"


def test_max_variance_asks_the_most_uncertain_free_candidates():
    """Brute force: the requests are the top epistemic variances among free rows."""
    X, y = _pool()
    step = decide(_settings(), _inputs(X, y, range(8)))
    var = step.fitted.predict(X).epistemic_var
    free = np.arange(8, N)
    best = free[np.argsort(var[free])[::-1][:3]]
    assert sorted(r.index for r in step.requests) == sorted(best.tolist())


def test_stop_decision_when_the_budget_is_spent():
    X, y = _pool()
    step = decide(_settings(), _inputs(X, y, range(10), n_calls=30))
    assert step.stop and not step.verdict.failed
    assert step.verdict.reason == "oracle budget spent (30/30)"
    assert step.requests == [] and step.rule is None
    assert step.fitted is not None  # the model is still fitted and recorded


def test_stop_decision_when_the_targets_are_met():
    X, y = _pool(noise=1e-4)
    settings = _settings(thresholds=StoppingThresholds(30, rmse_target=0.01, min_labels=5))
    step = decide(settings, _inputs(X, y, range(12)))
    assert step.stop and step.verdict.reason.startswith("targets met: rmse")
    assert step.metrics["rmse"] <= 0.01


def test_failed_calls_can_fail_the_campaign():
    X, y = _pool()
    settings = _settings(thresholds=StoppingThresholds(30, max_failure_fraction=0.2))
    # 6 successes of 10 calls: 4 failed (40% > 20%).
    step = decide(settings, _inputs(X, y, range(6), n_calls=10))
    assert step.stop and step.verdict.failed


def test_an_exhausted_pool_stops():
    X, y = _pool()
    inputs = _inputs(X, y, range(8))
    inputs.dear_taken[:] = True
    step = decide(_settings(), inputs)
    assert step.stop and step.verdict.reason == "candidate pool exhausted"
    assert step.requests == []


def test_without_labels_the_first_choice_is_random_and_nothing_is_measured():
    X, y = _pool()
    step = decide(_settings(), _inputs(X, y, []))
    assert step.fitted is None and step.domain is None and step.diversity is None
    assert all(v is None for v in step.metrics.values())
    assert step.rule == "random" and len(step.requests) == 3


def test_outstanding_questions_and_the_budget_shrink_the_batch():
    X, y = _pool()
    step = decide(_settings(), _inputs(X, y, range(8), n_outstanding=2))
    assert len(step.requests) == 1  # batch 3, 2 still open
    step = decide(_settings(), _inputs(X, y, range(8), n_calls=29))
    assert len(step.requests) == 1  # budget 30, 29 spent


def test_a_step_is_reproducible_and_seeded_by_the_iteration():
    X, y = _pool()
    settings = _settings(rule="random")
    first = [r.index for r in decide(settings, _inputs(X, y, range(8), iteration=2)).requests]
    again = [r.index for r in decide(settings, _inputs(X, y, range(8), iteration=2)).requests]
    assert first == again
    draws = {
        tuple(r.index for r in decide(settings, _inputs(X, y, range(8), iteration=k)).requests)
        for k in range(2, 8)
    }
    assert len(draws) > 1


def test_cost_aware_asks_each_fidelity_only_where_it_is_free():
    X, y = _pool()
    cheap_y = y + 0.01
    dear = np.arange(6)
    cheap = np.arange(0, 30)
    dear_taken = np.zeros(N, bool)
    dear_taken[dear] = True
    cheap_taken = np.zeros(N, bool)
    cheap_taken[cheap] = True
    settings = _settings(rule="cost_aware", dear_cost=1.0, cheap_cost=0.05, batch_size=4)
    inputs = StepInputs(
        TrainingData(X, dear, y[dear], cheap, cheap_y[cheap]),
        iteration=1,
        n_oracle_calls=6,
        dear_taken=dear_taken,
        cheap_taken=cheap_taken,
    )
    step = decide(settings, inputs)
    assert step.fitted.multi_fidelity and not step.stop
    assert step.requests
    for r in step.requests:
        assert not (cheap_taken if r.cheap else dear_taken)[r.index]


def test_single_fidelity_never_asks_the_cheap_oracle():
    X, y = _pool()
    inputs = _inputs(X, y, range(8), cheap_taken=np.zeros(N, bool))
    assert not any(r.cheap for r in decide(_settings(), inputs).requests)


def test_learning_settings_come_from_the_campaign_config():
    from alcampaign.campaign.controller import learning_settings
    from alcampaign.config import CampaignConfig

    config = CampaignConfig.model_validate(
        {
            "name": "s",
            "seed": 7,
            "system": {"structure": "unused.cif"},
            "surrogate": {"kind": "ensemble", "n_members": 4},
            "acquisition": {"rule": "lower_confidence_bound", "batch_size": 2, "kappa": 1.5},
            "stopping": {"max_oracle_calls": 12, "cv_folds": 3},
        }
    )
    s = learning_settings(config)
    assert (s.seed, s.surrogate, s.n_members, s.rule, s.batch_size, s.kappa) == (
        7,
        "ensemble",
        4,
        "lower_confidence_bound",
        2,
        1.5,
    )
    assert s.cv_folds == 3 and s.thresholds.max_oracle_calls == 12
    assert s.cheap_cost is None and not s.multi_fidelity


@pytest.mark.parametrize("module", ["alcampaign.science.learning"])
def test_the_science_step_imports_no_config_store_or_workflow(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in sys.modules if m.startswith(('alcampaign.config', "
        "'alcampaign.store', 'alcampaign.campaign', 'jobflow', 'maggma', 'pymongo'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
