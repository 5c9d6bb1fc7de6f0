"""Kill -9 a running campaign at seven points of an iteration, resume it, and check
that nothing was lost or asked twice.

Each case runs ``alcampaign run`` in a subprocess that SIGKILLs itself at one point
(``fault_driver.py``), then ``alcampaign resume`` to the stop, on the embedded store.
Invariants against an uninterrupted reference run: the campaign stops the same way
with the same labels (zero lost), every label is unique, every completed oracle job
ran once (the job store holds one output per candidate; zero repeated calls), and no
candidate is left ``acquired``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from alcampaign.config import embedded_store_spec
from alcampaign.store.facade import CampaignStores, job_store_from_spec

from conftest import small_config_dict

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "fault_driver.py"
NAME = "faults"

# (point, which call): chosen so each kill lands inside the campaign, not before it.
POINTS = [
    ("after_acquisitions", 2),  # the first controller's decision is recorded
    ("during_launch", 2),  # its questions are being mirrored onto the candidates
    ("during_oracle", 40),  # inside an EMT relaxation of the initial batch
    ("before_ingest", 3),  # the initial batch answered, the ingest job mid-way
    ("after_label", 2),  # the second batch's labels stored, nothing after
    ("during_model_update", 2),  # the second controller is fitting
    ("during_stop_decision", 3),  # the third controller is judging
]


def _cli(home: Path, point: str, nth: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALCAMPAIGN_HOME": str(home), "PYTHONPATH": str(HERE)}
    return subprocess.run(
        [sys.executable, str(DRIVER), point, str(nth), "--", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _outcome(home: Path) -> dict:
    js = job_store_from_spec(embedded_store_spec(home))
    js.connect()
    stores = CampaignStores.from_job_store(js)
    doc = stores.get_campaign(NAME)
    labels = stores.get_labels(NAME)
    oracle_runs = Counter(
        (d["metadata"]["candidate_id"], d["metadata"]["fidelity"])
        for d in js.docs_store.query({"metadata.campaign": NAME}, properties=["metadata"])
    )
    states = Counter(d["state"] for d in stores.candidate_table(NAME, ["state"]))
    return {
        "state": doc["state"],
        "stop_reason": doc["stop_reason"],
        "labels": sorted((lab["candidate_id"], lab["fidelity"]) for lab in labels),
        "energies": {lab["candidate_id"]: lab["energy_per_atom"] for lab in labels},
        "asked": sorted((a["candidate_id"], a["fidelity"]) for a in doc["acquisitions"]),
        "oracle_runs": oracle_runs,
        "states": states,
        "n_oracle_calls": doc["n_oracle_calls"],
    }


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "faults.yaml"
    cfg = small_config_dict(name=NAME, stopping={"max_oracle_calls": 10})
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def reference(config_path, tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("reference")
    proc = _cli(home, "none", 0, "run", str(config_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _outcome(home)


@pytest.mark.parametrize(("point", "nth"), POINTS)
def test_kill_9_then_resume_loses_and_repeats_nothing(point, nth, config_path, reference, tmp_path):
    home = tmp_path / "home"
    killed = _cli(home, point, nth, "run", str(config_path))
    assert killed.returncode == -signal.SIGKILL, (
        f"the campaign was not killed at {point}: " + killed.stdout[-2000:] + killed.stderr[-2000:]
    )
    resumed = _cli(home, "none", 0, "resume", NAME)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    got = _outcome(home)

    assert got["state"] == reference["state"] == "stopped"
    assert got["stop_reason"] == reference["stop_reason"]
    # Zero lost labels: the same questions, each answered once, with the same answers.
    assert got["labels"] == reference["labels"] == sorted(set(got["labels"]))
    assert got["asked"] == got["labels"]
    assert got["energies"] == pytest.approx(reference["energies"])
    assert got["n_oracle_calls"] == reference["n_oracle_calls"]
    # Zero repeated oracle calls: one finished oracle job per label.
    assert got["oracle_runs"] == Counter(dict.fromkeys(got["labels"], 1))
    assert got["states"]["acquired"] == 0 and got["states"]["labelled"] == len(got["labels"])
