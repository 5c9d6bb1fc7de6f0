"""Shared fixtures: small campaign configs and fresh stores."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STORES = ROOT / "stores"


def small_config_dict(**overrides) -> dict:
    """A campaign on fcc Cu-Au cells of at most 4 atoms (29 orderings), EMT oracle."""
    cfg = {
        "name": "test-cuau",
        "seed": 1,
        "system": {"structure": str(EXAMPLES / "cuau_fcc.cif")},
        "enumeration": {"max_size": 4},
        "features": {"cutoffs": [5.0]},
        "prescreen": {"enabled": False},
        "oracle": {
            "maker": "atomate2.ase.jobs.EmtRelaxMaker",
            "kwargs": {"relax_cell": True, "steps": 200, "relax_kwargs": {"fmax": 0.02}},
            "fidelity": "emt",
        },
        "acquisition": {"rule": "max_variance", "batch_size": 2},
        "initial_design": {"n_initial": 4},
        "stopping": {"max_oracle_calls": 10, "rmse_target": 0.0001, "min_labels": 5, "cv_folds": 4},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict as YAML and return its path."""

    def write(cfg: dict, name: str = "campaign.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


@pytest.fixture
def alc_home(tmp_path, monkeypatch) -> Path:
    """An empty $ALCAMPAIGN_HOME (embedded database) for the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("ALCAMPAIGN_HOME", str(home))
    return home


@pytest.fixture
def memory_store():
    """A connected in-memory JobStore with every campaign collection."""
    from alcampaign.store.facade import load_job_store

    store = load_job_store(STORES / "memory.yaml")
    store.connect()
    return store


@pytest.fixture(scope="session")
def stored_campaign(tmp_path_factory):
    """A small finished campaign in an embedded (montydb) store, run once per session
    for the API and dashboard tests: ``(store YAML path, campaign name)``. The oracle is
    a fixed-cell EMT relaxation, so the run takes seconds."""
    from jobflow import run_locally

    from alcampaign.campaign.flows import campaign_flow
    from alcampaign.config import embedded_store_spec, load_config
    from alcampaign.store.facade import job_store_from_spec
    from alcampaign.structures.enumeration import read_structure

    root = tmp_path_factory.mktemp("served")
    spec = embedded_store_spec(root / "home")
    store_file = root / "store.yaml"
    store_file.write_text(yaml.safe_dump(spec))
    cfg_file = root / "campaign.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            small_config_dict(
                name="served-cuau",
                oracle={
                    "maker": "atomate2.ase.jobs.EmtRelaxMaker",
                    "kwargs": {"relax_cell": False, "steps": 50},
                    "fidelity": "emt",
                },
                stopping={"max_oracle_calls": 6},
            )
        )
    )
    cfg = load_config(cfg_file)
    job_store = job_store_from_spec(spec)
    job_store.connect()
    run_locally(
        campaign_flow(cfg, read_structure(cfg.system.structure)),
        store=job_store,
        root_dir=root,
        log=False,
    )
    return store_file, cfg.name


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def headless_chromium(profile: Path, *extra_flags: str, wait: float = 30.0):
    """Debian's chromium through chromedriver, headless, with a fresh profile (no
    Selenium Manager download). Fails, rather than skips, when either is missing,
    unless ``ALCAMPAIGN_SKIP_BROWSER=1``."""
    if os.environ.get("ALCAMPAIGN_SKIP_BROWSER") == "1":
        pytest.skip("ALCAMPAIGN_SKIP_BROWSER=1")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: apt-get install chromium chromium-driver "
            "(scripts/setup.sh --browser does), or set ALCAMPAIGN_SKIP_BROWSER=1"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *extra_flags,
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(wait)
    return driver
