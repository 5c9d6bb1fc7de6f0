"""On-the-fly MD campaigns end to end: jobflow run_locally on a real store."""

import warnings

import numpy as np
import pytest
from jobflow import run_locally
from pymatgen.core import Structure
from typer.testing import CliRunner

from alcampaign.campaign.otf_md import FRAME, md_flow, md_resume_flow
from alcampaign.cli import app
from alcampaign.md.config import MDCampaignConfig
from alcampaign.md.dynamics import temperature_at
from alcampaign.store.facade import CampaignStores

import oracles
from conftest import EXAMPLES

HOLD, END = 120, 200
SCHEDULE = [[0, 300], [HOLD, 300], [END, 1500]]


def md_config_dict(**overrides) -> dict:
    """8 Cu atoms, a small descriptor, hold at 300 K then heat to 1500 K."""
    cfg = {
        "name": "test-md",
        "seed": 0,
        "system": {"structure": str(EXAMPLES / "cu_fcc.cif"), "supercell": [2, 1, 1]},
        "potential": {"pair": {"r_cut": 4.5, "n_radial": 6}, "soap": {"n_max": 2, "l_max": 2}},
        "md": {"n_steps": END, "temperature": SCHEDULE},
        "oracle": {"fidelity": "emt"},
        "stopping": {"max_oracle_calls": 40},
    }
    cfg.update(overrides)
    return cfg


def run(flow, store, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_locally(flow, store=store, root_dir=tmp_path, log=False)


def start(cfg: dict, store, tmp_path):
    config = MDCampaignConfig.model_validate(cfg)
    run(md_flow(config, Structure.from_file(config.system.structure)), store, tmp_path)
    return CampaignStores.from_job_store(store)


@pytest.mark.slow
def test_oracle_called_when_leaving_the_domain_not_inside(memory_store, tmp_path):
    stores = start(md_config_dict(), memory_store, tmp_path)
    doc = stores.get_campaign("test-md")
    assert doc["state"] == "stopped" and doc["md_state"]["step"] == END
    frames = stores.candidate_table("test-md", ["source", "step", "flags", "state", "kind"])
    md_steps = sorted(f["step"] for f in frames if f["source"] == "md")
    # Leaving the randomly displaced bootstrap frames for real 300 K MD: a few early calls;
    # then the model knows 300 K: no call for the rest of the hold ...
    burn_in = 60
    assert all(s < burn_in or s >= HOLD for s in md_steps), md_steps
    # ... and calls once the heating takes the system out of the domain, at high T.
    hot = [s for s in md_steps if s >= HOLD]
    assert hot, md_steps
    assert all(temperature_at(s, SCHEDULE) > 400 for s in hot)
    # Every frame was labelled once; labels carry the frame kind, forces and energy.
    labels = stores.get_labels("test-md", properties=["kind", "forces", "energy", "status"])
    assert sorted(lab["candidate_id"] for lab in labels) == sorted(
        f["candidate_id"] for f in frames
    )
    assert all(lab["kind"] == FRAME and lab["status"] == "success" for lab in labels)
    assert all(np.asarray(lab["forces"]).shape == (8, 3) for lab in labels)
    assert doc["n_oracle_calls"] == len(frames) == doc["md_summary"]["n_bootstrap"] + len(md_steps)
    # Flags of every MD frame name the limit it crossed; the trajectory covers every step.
    assert all(f["flags"]["reasons"] for f in frames if f["source"] == "md")
    steps = np.concatenate([h["trajectory"]["step"] for h in doc["history"]])
    np.testing.assert_array_equal(np.unique(steps), np.arange(END + 1))
    model = stores.latest_model("test-md")
    assert model["n_train"] == len(frames)


@pytest.mark.slow
def test_interrupted_run_resumes_without_losing_or_repeating_a_label(memory_store, tmp_path):
    oracles.CALLS.clear()
    oracles.INTERRUPT_AT[0] = 5  # the 5th oracle call stops the whole run
    cfg = md_config_dict(
        oracle={"maker": "oracles.InterruptingEmtMaker", "kwargs": {}, "fidelity": "emt"}
    )
    with pytest.raises(KeyboardInterrupt):
        start(cfg, memory_store, tmp_path)
    stores = CampaignStores.from_job_store(memory_store)
    doc = stores.get_campaign("test-md")
    assert doc["state"] == "running" and len(oracles.CALLS) == 5
    asked = stores.candidate_table("test-md", ["state"])
    assert [f["state"] for f in asked].count("acquired") == 1  # recorded, never answered
    n_labels_before = len(stores.get_labels("test-md"))
    assert n_labels_before == 4

    oracles.INTERRUPT_AT[0] = 0
    run(md_resume_flow("test-md"), memory_store, tmp_path)
    doc = stores.get_campaign("test-md")
    assert doc["state"] == "stopped" and doc["md_state"]["step"] == END
    frames = stores.candidate_table("test-md", ["state"])
    labels = stores.get_labels("test-md")
    ids = [lab["candidate_id"] for lab in labels]
    assert len(ids) == len(set(ids)) == len(frames)  # one label per frame, none lost
    assert all(f["state"] == "labelled" for f in frames)
    # Each frame went to the oracle once, plus the one call that was interrupted.
    assert len(oracles.CALLS) == len(frames) + 1
    assert stores.latest_model("test-md")["n_train"] == len(frames)


def test_md_command_refuses_bad_input_and_writes_nothing(write_config, alc_home):
    runner = CliRunner()
    bad = write_config(md_config_dict(md={"n_steps": 10, "temperature": [[5, 300], [0, 400]]}))
    result = runner.invoke(app, ["md", str(bad)])
    assert result.exit_code == 2 and "md.temperature" in result.output
    unknown = write_config(md_config_dict(triggers={"force_sd": 0.1}), "unknown.yaml")
    result = runner.invoke(app, ["md", str(unknown)])
    assert result.exit_code == 2 and "triggers.force_sd" in result.output
    gold = md_config_dict()
    gold["system"]["structure"] = str(EXAMPLES / "cuau_fcc.cif")  # disordered: not for MD
    result = runner.invoke(app, ["md", str(write_config(gold, "gold.yaml"))])
    assert result.exit_code == 2
    assert not (alc_home / "db").exists()


@pytest.mark.slow
def test_md_command_runs_to_its_stop(write_config, alc_home):
    cfg = md_config_dict(md={"n_steps": 40, "temperature": [[0, 300]]})
    result = CliRunner().invoke(app, ["md", str(write_config(cfg))])
    assert result.exit_code == 0, result.output
    assert "MD reached step 40" in result.output
    again = CliRunner().invoke(app, ["resume", "test-md"])
    assert again.exit_code == 0 and "stopped" in again.output
