"""A campaign with an audit sample and the honest accuracy estimate, end to end."""

from __future__ import annotations

import numpy as np
import pytest
from jobflow import run_locally

from alcampaign.campaign.flows import campaign_flow
from alcampaign.campaign.predictions import predict_candidates
from alcampaign.campaign.status import status_record
from alcampaign.config import load_config
from alcampaign.science.learning import LearningSettings, StepInputs, TrainingData, decide
from alcampaign.science.stopping import StoppingThresholds
from alcampaign.store.facade import CampaignStores
from alcampaign.structures.enumeration import read_structure

from conftest import small_config_dict


def test_decide_never_offers_an_audit_candidate():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(40), rng.normal(size=(40, 2))])
    y = X @ np.array([0.0, 0.01, -0.02]) + rng.normal(0, 0.002, 40)
    audit = np.arange(30, 40)
    train = np.arange(8)
    data = TrainingData(X, train, y[train], audit_index=audit, audit_y=y[audit])
    taken = np.zeros(40, dtype=bool)
    taken[train] = taken[audit] = True
    settings = LearningSettings(StoppingThresholds(max_oracle_calls=100), batch_size=22)
    for rule in ("max_variance", "random", "d_optimal"):
        step = decide(
            LearningSettings(settings.thresholds, rule=rule, batch_size=22),
            StepInputs(data, 1, 18, dear_taken=taken),
        )
        picked = {r.index for r in step.requests}
        assert len(picked) == 22 and not picked & set(audit.tolist())
    # ...even when the caller forgot to mark them as taken.
    step = decide(settings, StepInputs(data, 1, 18))
    assert not {r.index for r in step.requests} & set(audit.tolist())


@pytest.mark.slow
@pytest.mark.parametrize("calibration", ["variance", "isotonic"])
def test_campaign_with_audit_sample(memory_store, write_config, tmp_path, calibration):
    cfg = load_config(
        write_config(
            small_config_dict(
                stopping={
                    "max_oracle_calls": 12,
                    "rmse_target": 0.0001,
                    "min_labels": 5,
                    "cv_folds": 4,
                    "audit_size": 3,
                    "accuracy_estimate": "audit",
                    "max_std_residual_alpha": 0.05,
                    "calibration": calibration,
                }
            )
        )
    )
    run_locally(
        campaign_flow(cfg, read_structure(cfg.system.structure)),
        store=memory_store,
        root_dir=tmp_path,
        log=False,
        ensure_success=True,
    )
    stores = CampaignStores.from_job_store(memory_store)
    doc = stores.get_campaign(cfg.name)
    audit = {a["candidate_id"] for a in doc["acquisitions"] if a["rule"] == "audit"}
    assert len(audit) == 3
    others = [a for a in doc["acquisitions"] if a["rule"] != "audit"]
    assert not audit & {a["candidate_id"] for a in others}  # never acquired by a rule
    model = stores.models.query_one({"campaign": cfg.name}, sort={"iteration": -1})
    assert not audit & set(model["training_ids"]) and set(model["audit_ids"]) == audit
    kind = {"variance": "variance_scale"}.get(calibration, calibration)
    assert model["calibration"]["kind"] == kind
    rec = status_record(doc)
    assert rec["accuracy"]["method"] == "audit" and rec["accuracy"]["n"] == 3
    m = rec["metrics"]
    assert m["rmse_low"] <= m["rmse"] <= m["rmse_high"]
    rmse = {c["name"]: c for c in rec["criteria"]}["rmse"]
    assert rmse["value"] == m["rmse_high"] and rmse["estimate"] == "audit"
    assert {c["name"] for c in rec["criteria"]} >= {"max_std_residual"}
    # Readers of the model get the recalibrated sigma.
    pred = predict_candidates(stores, cfg.name)
    from alcampaign.campaign.predictions import latest_model, model_predictor
    from alcampaign.science.calibration import calibration_from_dict

    scale = calibration_from_dict(model["calibration"]).std_factor

    raw = model_predictor({**latest_model(stores, cfg.name), "calibration": None})
    X = stores.read_block(cfg.name, "features")[1]
    assert np.allclose(pred.std, scale * raw.predict(X).std)
