"""Reports rendered from a stored campaign (with and without a baseline), each plot on
its own, the predicted hull, and the live status view."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from alcampaign.cli import app
from alcampaign.report.build import PLOTS, calibration_curve, collect, hull_table
from alcampaign.store.facade import open_stores

from conftest import small_config_dict

runner = CliRunner()
ALL_PLOTS = set(PLOTS)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two finished campaigns in one embedded store (the second a random-acquisition
    baseline) and a third that has asked its first external questions only (no label);
    returns the store's $ALCAMPAIGN_HOME."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALCAMPAIGN_HOME", str(root / "home"))
        for name, extra in (
            ("test-cuau", {}),
            ("baseline", {"acquisition": {"rule": "random", "batch_size": 2}}),
            ("asking", {"oracle": {"maker": "external", "fidelity": "emt"}}),
        ):
            cfg = small_config_dict(name=name, stopping={"max_oracle_calls": 10}, **extra)
            path = root / f"{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            result = runner.invoke(app, ["run", str(path)])
            assert result.exit_code == 0, result.output
    return root / "home"


@pytest.fixture
def home(stored, monkeypatch) -> str:
    """The module's store as this test's $ALCAMPAIGN_HOME; the campaign's name."""
    monkeypatch.setenv("ALCAMPAIGN_HOME", str(stored))
    return "test-cuau"


def _data(name: str, baseline: str | None = None):
    _, stores = open_stores(None)
    return collect(stores, name, baseline)


def _pngs(out) -> set[str]:
    found = set()
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        found.add(png.stem)
    return found


@pytest.mark.parametrize("baseline", [None, "baseline"], ids=["no-baseline", "baseline"])
def test_report_files_and_numbers(home, tmp_path, baseline):
    out = tmp_path / "report"
    args = ["report", home, "--out", str(out)] + (["--baseline", baseline] if baseline else [])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"({len(ALL_PLOTS)} plots)" in result.output
    assert _pngs(out) == ALL_PLOTS
    summary = json.loads((out / "summary.json").read_text())
    status = json.loads(runner.invoke(app, ["status", home, "--json"]).output)
    for key, value in status["metrics"].items():  # status picks the summary's metrics
        assert summary["metrics"].get(key) == value, key
    assert summary["n_oracle_calls"] == status["n_oracle_calls"] == 10
    # The stored out-of-fold predictions reproduce the stored calibration error.
    # From the stored (recalibrated) std; the status ECE scales each residual without it.
    assert 0 <= summary["cv_ece_recomputed"] <= 1
    page = (out / "index.html").read_text()
    assert f"{status['metrics']['rmse']:.4g}" in page and "data:image/png;base64," in page
    assert page.count("<img") == len(ALL_PLOTS)
    assert set(summary["plots"]) == {f"{k}.png" for k in ALL_PLOTS}
    assert summary["ground_states"]
    # 29 orderings, 10 labelled: the other 19 are drawn as predictions.
    assert summary["n_predicted"] == 19
    assert "closest to the hull (predicted)" in page


@pytest.mark.parametrize("baseline", [None, "baseline"], ids=["no-baseline", "baseline"])
@pytest.mark.parametrize("plot", sorted(PLOTS))
def test_every_plot_with_and_without_baseline(home, plot, baseline):
    import matplotlib.pyplot as plt

    data = _data(home, baseline)
    fig = PLOTS[plot](data, hull_table(data))
    assert fig is not None
    ax = fig.axes[0]
    assert ax.lines or ax.collections or ax.patches
    labels = ax.get_legend_handles_labels()[1]
    if plot == "learning_curve":
        assert any(label.endswith(home) for label in labels)
        assert any("(baseline)" in label for label in labels) == (baseline is not None)
    if plot == "convex_hull":
        assert {"labelled", "ground states"} <= set(labels)
        assert any(label.startswith("unlabelled: predicted") for label in labels)
    plt.close(fig)


def test_report_of_a_campaign_without_labels(home, tmp_path):
    """A campaign waiting for its first external answers: the plots that have data."""
    out = tmp_path / "asking"
    result = runner.invoke(app, ["report", "asking", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "waiting" and summary["n_oracle_calls"] == 0
    assert "ground_states" not in summary
    assert _pngs(out) == {"learning_curve"}
    data = _data("asking")
    assert data.model is None and data.pool is None and hull_table(data) is None
    for plot in ALL_PLOTS - {"learning_curve"}:
        assert PLOTS[plot](data, None) is None


def test_predicted_hull_is_the_latest_model_at_the_unlabelled_candidates(home):
    _, stores = open_stores(None)
    data = _data(home)
    hull = hull_table(data)
    pred = hull["predicted"]
    labelled = {lab["candidate_id"] for lab in data.labels if lab["status"] == "success"}
    every = {d["candidate_id"] for d in stores.candidate_table(home, ["state"])}
    assert set(pred["ids"]) == every - labelled and not set(pred["ids"]) & set(hull["ids"])
    assert pred["model_iteration"] == data.model["iteration"]
    std = np.array(pred["std"])
    # The predictive std includes the noise: never below 1/sqrt(beta).
    assert np.all(std >= 1 / np.sqrt(data.model["beta"]) - 1e-12)
    # Formation energies share the labelled reference: pure Cu and pure Au are 0.
    comps = {
        d["candidate_id"]: d["composition"] for d in stores.candidate_table(home, ["composition"])
    }
    for cid, x, e in zip(pred["ids"], pred["x"], pred["formation_energy"], strict=True):
        assert x == pytest.approx(comps[cid].get(hull["x_element"], 0) / sum(comps[cid].values()))
        assert np.isfinite(e)
    ends = [i for i, x in enumerate(hull["x"]) if x in (0.0, 1.0)]
    assert all(hull["formation_energy"][i] == pytest.approx(0, abs=1e-9) for i in ends)
    # Predicted distance to the hull: the formation energy minus the hull line at x.
    on = [i for i, a in enumerate(hull["e_above_hull"]) if a < 1e-6]
    xs = np.array(hull["x"])[on]
    es = np.array(hull["formation_energy"])[on]
    order = np.argsort(xs)
    line = np.interp(pred["x"], xs[order], es[order])
    np.testing.assert_allclose(pred["e_above_hull"], np.array(pred["formation_energy"]) - line)


def test_predicted_hull_points_are_the_query_predictions(home):
    """Each unlabelled hull point is ``query``'s predicted energy (and std) minus the
    labelled elemental references: one prediction path for the report and the CLI."""
    result = runner.invoke(app, ["query", home, "--format", "json", "--limit", "0"])
    assert result.exit_code == 0, result.output
    rows = {r["candidate_id"]: r for r in json.loads(result.output)}
    hull = hull_table(_data(home))
    assert hull["method"] == "pymatgen PhaseDiagram"
    labelled = [rows[cid] for cid in hull["ids"]]
    x = np.array(hull["x"])
    e = np.array([r["label_energy_per_atom"] for r in labelled])
    mu_lo, mu_hi = e[x == 0].min(), e[x == 1].min()  # the elemental references
    pred = hull["predicted"]
    for cid, xi, form, std in zip(
        pred["ids"], pred["x"], pred["formation_energy"], pred["std"], strict=True
    ):
        row = rows[cid]
        assert row["label_energy_per_atom"] is None
        ref = (1 - xi) * mu_lo + xi * mu_hi
        assert form == pytest.approx(row["predicted_energy_per_atom"] - ref, abs=1e-9)
        assert std == pytest.approx(row["predicted_std"], rel=1e-9)


def test_report_errors(alc_home, tmp_path):
    assert runner.invoke(app, ["report", "nope", "--out", str(tmp_path)]).exit_code == 2


def test_calibration_curve_closed_form():
    rng = np.random.default_rng(0)
    mean, std = np.zeros(50000), np.ones(50000)
    nominal, observed = calibration_curve(rng.normal(size=50000), mean, std)
    np.testing.assert_allclose(observed, nominal, atol=0.01)


def test_live_status_view(home):
    result = runner.invoke(
        app, ["status", home, "--watch", "--interval", "0.01", "--max-updates", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "live" in result.output and "waiting for" in result.output
    assert "rmse" in result.output and "stopped" in result.output
