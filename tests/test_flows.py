"""ActiveLearningMaker: a campaign as an atomate2-style Maker inside a user's workflow."""

from __future__ import annotations

import pytest
from atomate2.ase.jobs import EmtRelaxMaker
from jobflow import Flow, job, run_locally
from pymatgen.core import Structure

from alcampaign.campaign.flows import ActiveLearningMaker
from alcampaign.campaign.oracle import import_maker, maker_settings
from alcampaign.config import ConfigError
from alcampaign.store.facade import CampaignStores
from alcampaign.structures.enumeration import read_structure

from conftest import small_config_dict


def _config(name: str) -> dict:
    cfg = small_config_dict(
        name=name,
        initial_design={"n_initial": 3},
        acquisition={"rule": "max_variance", "batch_size": 1},
        stopping={"max_oracle_calls": 5, "min_labels": 3, "cv_folds": 3},
    )
    del cfg["oracle"]  # the Maker brings its own
    return cfg


@job
def parent_structure(path: str) -> Structure:
    """A stand-in for the user's own step that produces the disordered structure."""
    return read_structure(path)


def test_maker_runs_a_campaign_inside_a_larger_flow(memory_store, tmp_path):
    cfg = _config("maker-cuau")
    oracle = EmtRelaxMaker(relax_cell=False, steps=50)
    maker = ActiveLearningMaker(oracle_maker=oracle, config=cfg)
    first = parent_structure(cfg["system"]["structure"])
    campaign = maker.make(first.output)  # the structure comes from an earlier job
    run_locally(
        Flow([first, campaign], name="user workflow"),
        store=memory_store,
        root_dir=tmp_path,
        log=False,
        ensure_success=True,
    )
    stores = CampaignStores.from_job_store(memory_store)
    doc = stores.get_campaign("maker-cuau")
    assert doc["state"] == "stopped" and doc["n_oracle_calls"] == 5
    assert doc["stop_reason"] == "oracle budget spent (5/5)"
    assert [h["iteration"] for h in doc["history"]] == [0, 1, 2]
    # The oracle Maker is recorded in the config (import path and changed fields) and
    # in every label, so a worker elsewhere rebuilds the same Maker.
    assert doc["config"]["oracle"]["maker"] == "atomate2.ase.jobs.EmtRelaxMaker"
    assert doc["config"]["oracle"]["kwargs"] == {"relax_cell": False, "steps": 50}
    labels = stores.get_labels("maker-cuau", properties=["status", "oracle"])
    assert len(labels) == 5 and all(lab["status"] == "success" for lab in labels)
    assert doc["parent"]["@class"] == "Structure"


def test_make_names_the_jobs_and_keeps_the_config_oracle():
    cfg = small_config_dict(name="plain")
    maker = ActiveLearningMaker(name="AL", config=cfg)
    flow = maker.make(read_structure(cfg["system"]["structure"]))
    assert flow.name == "AL plain"
    assert [j.name for j in flow.jobs] == [
        "register plain",
        "enumerate plain",
        "prescreen plain",
        "initial design plain",
    ]
    assert maker.campaign_config().oracle.kwargs == cfg["oracle"]["kwargs"]


def test_cheap_maker_becomes_the_cheap_fidelity():
    cfg = small_config_dict(name="mf", acquisition={"rule": "cost_aware", "batch_size": 2})
    cfg["oracle"]["cheap"] = {"maker": "atomate2.ase.jobs.EmtRelaxMaker", "fidelity": "cheap"}
    maker = ActiveLearningMaker(cheap_maker=EmtRelaxMaker(steps=3), config=cfg)
    cheap = maker.campaign_config().oracle.cheap
    assert cheap.fidelity == "cheap" and cheap.kwargs == {"steps": 3}


def test_maker_settings_round_trip():
    maker = EmtRelaxMaker(relax_cell=False, relax_kwargs={"fmax": 0.05})
    path, kwargs = maker_settings(maker)
    assert import_maker(path, kwargs) == maker


def test_a_maker_without_config_is_refused():
    with pytest.raises(ConfigError, match="needs a config"):
        ActiveLearningMaker().make(None)
