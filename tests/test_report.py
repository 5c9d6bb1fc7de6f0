"""Reports rendered from a stored campaign, and the live status view."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alcampaign.cli import app
from alcampaign.report.build import calibration_curve

from conftest import small_config_dict

runner = CliRunner()


@pytest.fixture
def campaign(alc_home, write_config):
    cfg = small_config_dict(stopping={"max_oracle_calls": 10})
    assert runner.invoke(app, ["run", str(write_config(cfg))]).exit_code == 0
    base = small_config_dict(
        name="baseline",
        acquisition={"rule": "random", "batch_size": 2},
        stopping={"max_oracle_calls": 10},
    )
    assert runner.invoke(app, ["run", str(write_config(base, "b.yaml"))]).exit_code == 0
    return "test-cuau"


def test_report_files_and_numbers(campaign, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", campaign, "--out", str(out), "--baseline", "baseline"])
    assert result.exit_code == 0, result.output
    expected = {
        "learning_curve",
        "parity",
        "calibration",
        "error_vs_uncertainty",
        "convex_hull",
        "acquisitions",
        "coverage_diversity",
        "cost",
    }
    for key in expected:
        png = out / f"{key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    summary = json.loads((out / "summary.json").read_text())
    status = json.loads(runner.invoke(app, ["status", campaign, "--json"]).output)
    assert summary["metrics"] == status["metrics"]
    assert summary["n_oracle_calls"] == status["n_oracle_calls"] == 10
    # The stored out-of-fold predictions reproduce the stored calibration error.
    assert summary["cv_ece_recomputed"] == pytest.approx(status["metrics"]["ece"])
    # Pure Cu and pure Au are ground states whenever both were labelled.
    page = (out / "index.html").read_text()
    assert f"{status['metrics']['rmse']:.4g}" in page and "data:image/png;base64," in page
    assert page.count("<img") == len(expected)
    assert set(summary["plots"]) == {f"{k}.png" for k in expected}
    assert summary["ground_states"]


def test_report_errors(alc_home, tmp_path):
    assert runner.invoke(app, ["report", "nope", "--out", str(tmp_path)]).exit_code == 2


def test_calibration_curve_closed_form():
    rng = np.random.default_rng(0)
    mean, std = np.zeros(50000), np.ones(50000)
    nominal, observed = calibration_curve(rng.normal(size=50000), mean, std)
    np.testing.assert_allclose(observed, nominal, atol=0.01)


def test_live_status_view(campaign):
    result = runner.invoke(
        app, ["status", campaign, "--watch", "--interval", "0.01", "--max-updates", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "live" in result.output and "waiting for" in result.output
    assert "rmse" in result.output and "stopped" in result.output
