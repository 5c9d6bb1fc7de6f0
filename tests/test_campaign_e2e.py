"""A whole campaign through jobflow's run_locally into real stores.

Cells of at most 4 atoms, a few iterations; the assertions check what landed in every
collection against independent computations.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from jobflow import run_locally
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from alcampaign.campaign.flows import campaign_flow, resume_flow
from alcampaign.config import embedded_store_spec, load_config
from alcampaign.store.facade import CampaignStores, job_store_from_spec
from alcampaign.structures.enumeration import read_structure

from conftest import small_config_dict


def _run(flow, job_store, tmp_path, ensure_success=True):
    run_locally(flow, store=job_store, root_dir=tmp_path, log=False, ensure_success=ensure_success)


def _campaign(write_config, job_store, tmp_path, ensure_success=True, **overrides):
    """Run a small campaign (``small_config_dict`` with overrides) to its end."""
    cfg = load_config(write_config(small_config_dict(**overrides)))
    _run(
        campaign_flow(cfg, read_structure(cfg.system.structure)),
        job_store,
        tmp_path,
        ensure_success,
    )
    return cfg, CampaignStores.from_job_store(job_store)


def _emt_energy(structure: Structure) -> float:
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = EMT()
    return atoms.get_potential_energy()


def _emt_relaxed_energy_per_atom(structure: Structure, fmax: float) -> float:
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = EMT()
    FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=200)
    return atoms.get_potential_energy() / len(atoms)


@pytest.fixture(params=["memory", "monty"])
def job_store(request, memory_store, tmp_path):
    if request.param == "memory":
        return memory_store
    store = job_store_from_spec(embedded_store_spec(tmp_path / "home"))
    store.connect()
    return store


def test_small_campaign_end_to_end(job_store, write_config, tmp_path):
    cfg, stores = _campaign(write_config, job_store, tmp_path, prescreen={"enabled": True})
    name = cfg.name

    # campaigns: stopped with a reason, one history entry per controller iteration.
    doc = stores.get_campaign(name)
    assert doc["state"] == "stopped" and doc["stop_reason"]
    assert doc["n_oracle_calls"] == cfg.stopping.max_oracle_calls  # the rmse target is unreachable
    assert [h["iteration"] for h in doc["history"]] == list(range(doc["iteration"] + 1))
    assert doc["metrics"]["rmse"] is not None and doc["metrics"]["ece"] is not None

    # candidates: all enumerated, prescreened, each labelled at most once.
    cands = stores.candidate_table(
        name, ["state", "prescreen", "acquisition", "structure", "features"]
    )
    assert len(cands) == 29
    assert all(
        c["prescreen"]["model"] == "CHGNet" and len(c["prescreen"]["forces"]) > 0 for c in cands
    )
    # The prescreen energy block (the dashboard's table) mirrors the candidates.
    e_ids, e, _ = stores.read_block(name, "prescreen_energy")
    assert e_ids == [c["candidate_id"] for c in cands]
    assert e[:, 0].tolist() == [c["prescreen"]["energy_per_atom"] for c in cands]
    labelled = [c for c in cands if c["state"] == "labelled"]
    assert len(labelled) == cfg.stopping.max_oracle_calls
    assert all(c["acquisition"] is not None for c in labelled)
    assert {c["acquisition"]["rule"] for c in labelled} == {
        "initial_end_member",
        "initial_random",
        "max_variance",
    }

    # labels: one per candidate, equal to EMT energies computed directly with ASE.
    labels = stores.get_labels(name, "emt")
    assert len({lab["candidate_id"] for lab in labels}) == len(labels) == len(labelled)
    by_id = {c["candidate_id"]: c for c in cands}
    fmax = cfg.oracle.kwargs["relax_kwargs"]["fmax"]
    for lab in labels:
        assert lab["status"] == "success" and lab["job_uuid"]
        final = Structure.from_dict(lab["final_structure"])
        assert lab["energy"] == pytest.approx(_emt_energy(final), abs=1e-8)
        assert lab["energy_per_atom"] == pytest.approx(lab["energy"] / len(final))
        initial = Structure.from_dict(by_id[lab["candidate_id"]]["structure"])
        assert lab["energy_per_atom"] == pytest.approx(
            _emt_relaxed_energy_per_atom(initial, fmax), abs=2e-3
        )

    # models: the stored posterior equals the closed form on the same data.
    model = stores.latest_model(name)
    assert model["iteration"] == doc["iteration"]
    # The Bayesian cluster expansion: one prior precision per column of the chosen basis,
    # the prescreen energy (centred on the pool) as a last column when offered.
    assert model["kind"] == "bayesian_cluster_expansion"
    X = np.array([by_id[cid]["features"] for cid in model["training_ids"]])
    if len(model["mean"]) == X.shape[1] + 1:
        pool_e = e[:, 0] - e[:, 0].mean()
        cheap = dict(zip(e_ids, pool_e, strict=True))
        X = np.column_stack([X, [cheap[cid] for cid in model["training_ids"]]])
    # It averages alternatives (sub-bases, with and without the prescreen energy): the
    # stored posterior is the mixture's mean and covariance of each one's closed form.
    energy = {lab["candidate_id"]: lab["energy_per_atom"] for lab in labels}
    y = np.array([energy[cid] for cid in model["training_ids"]]) - model["offset"]
    d = X.shape[1]
    mean, second = np.zeros(d), np.zeros((d, d))
    for alt in model["model_average"]:
        cols, beta = alt["columns"], alt["beta"]
        Xs = X[:, cols]
        S = np.linalg.inv(np.diag(alt["alphas"]) + beta * Xs.T @ Xs)
        m = beta * S @ Xs.T @ y
        mean[cols] += alt["weight"] * m
        second[np.ix_(cols, cols)] += alt["weight"] * (S + np.outer(m, m))
    assert sum(alt["weight"] for alt in model["model_average"]) == pytest.approx(1.0)
    np.testing.assert_allclose(np.asarray(model["mean"]), mean, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(np.asarray(model["covariance"]), second - np.outer(mean, mean),
                               rtol=1e-6, atol=1e-12)
    best = max(c["log_evidence"] for c in model["evidence_choices"])
    assert model["log_evidence"] == pytest.approx(best, abs=1e-6)
    assert model["prior"] == "hierarchical" and model["basis"]["orders"]

    # Resuming a stopped campaign changes nothing.
    n_docs = job_store.docs_store.count()
    _run(resume_flow(name), job_store, tmp_path)
    assert len(stores.get_labels(name)) == len(labels)
    assert job_store.docs_store.count() == n_docs + 3  # the three idempotent pipeline jobs


def test_crash_after_acquisition_resumes_without_lost_or_repeated_calls(
    memory_store, write_config, tmp_path
):
    """Acquisitions recorded but never answered are labelled on resume, exactly once."""
    cfg = load_config(write_config(small_config_dict(stopping={"max_oracle_calls": 6})))
    stores = CampaignStores.from_job_store(memory_store)
    flow = campaign_flow(cfg, read_structure(cfg.system.structure))
    # Run only register, enumerate, prescreen and initial design: the initial design
    # records its acquisitions and adds oracle jobs, which we drop (the "crash").
    for job in flow.jobs:
        job.run(memory_store)
    acquired = stores.open_acquisitions(stores.get_campaign(cfg.name))
    assert len(acquired) == cfg.initial_design.n_initial and not stores.get_labels(cfg.name)

    _run(resume_flow(cfg.name), memory_store, tmp_path)
    doc = stores.get_campaign(cfg.name)
    labels = stores.get_labels(cfg.name)
    assert doc["state"] == "stopped" and len(labels) == 6
    assert len({lab["candidate_id"] for lab in labels}) == 6
    assert {a["candidate_id"] for a in acquired} <= {lab["candidate_id"] for lab in labels}


def test_failed_oracle_is_recorded_and_never_asked_again(memory_store, write_config, tmp_path):
    cfg, stores = _campaign(
        write_config,
        memory_store,
        tmp_path,
        ensure_success=False,
        oracle={"maker": "oracles.OddCellsFailEmtRelaxMaker", "fidelity": "emt"},
        initial_design={"n_initial": 8},
        stopping={"max_oracle_calls": 14},
    )
    labels = stores.get_labels(cfg.name)
    assert stores.get_campaign(cfg.name)["state"] == "stopped"
    assert len(labels) == 14 and len({lab["candidate_id"] for lab in labels}) == 14
    failed = [lab for lab in labels if lab["status"] == "failed"]
    assert failed and all(lab["error"] and lab["energy_per_atom"] is None for lab in failed)
    cands = {c["candidate_id"]: c for c in stores.candidate_table(cfg.name, ["state", "n_sites"])}
    assert all(cands[lab["candidate_id"]]["state"] == "failed" for lab in failed)
    assert all(cands[lab["candidate_id"]]["n_sites"] % 2 == 1 for lab in failed)


def test_campaign_fails_above_the_failure_fraction(memory_store, write_config, tmp_path):
    cfg, stores = _campaign(
        write_config,
        memory_store,
        tmp_path,
        ensure_success=False,
        oracle={"maker": "oracles.AlwaysFailMaker", "fidelity": "emt"},
    )
    doc = stores.get_campaign(cfg.name)
    assert doc["state"] == "failed" and "failed" in doc["stop_reason"]
    assert len(stores.get_labels(cfg.name)) == cfg.initial_design.n_initial
    assert "acquired" not in {c["state"] for c in stores.candidate_table(cfg.name, ["state"])}


CHEAP_CHGNET = {
    "maker": "atomate2.forcefields.jobs.ForceFieldRelaxMaker",
    "kwargs": {"force_field_name": "CHGNet", "steps": 100, "relax_kwargs": {"fmax": 0.05}},
    "fidelity": "chgnet",
    "cost": 0.05,
}


@pytest.mark.parametrize(
    "overrides",
    [
        {"acquisition": {"rule": "d_optimal"}},
        {"acquisition": {"rule": "mutual_information"}, "surrogate": {"kind": "ensemble"}},
        {"acquisition": {"rule": "lower_confidence_bound"}},
        {
            "acquisition": {"rule": "random"},
            "stopping": {"plateau_window": 1, "plateau_tolerance": 0.9},
        },
        {"features": {"kind": "chgnet_embedding"}, "prescreen": {"enabled": True, "forces": False}},
        {
            "acquisition": {"rule": "cost_aware", "batch_size": 3},
            "oracle": {
                "maker": "atomate2.ase.jobs.EmtRelaxMaker",
                "fidelity": "emt",
                "kwargs": {"relax_kwargs": {"fmax": 0.02}},
                "cheap": CHEAP_CHGNET,
            },
            "stopping": {"max_oracle_calls": 8, "max_cost": 20.0},
        },
    ],
    ids=["d_optimal", "mi_ensemble", "lcb", "random_plateau", "embedding", "cost_aware"],
)
def test_every_rule_runs_a_campaign(overrides, memory_store, write_config, tmp_path):
    cfg, stores = _campaign(write_config, memory_store, tmp_path, **overrides)
    doc = stores.get_campaign(cfg.name)
    assert doc["state"] == "stopped", doc["stop_reason"]
    rule = cfg.acquisition.rule
    assert {h["rule"] for h in doc["history"][:-1]} == {rule}
    last = doc["history"][-1]
    assert set(last["diversity"]) == {
        "coverage",
        "min_pairwise_distance",
        "kernel_logdet",
        "radius",
    }
    assert 0 < last["diversity"]["coverage"] <= 1
    model = stores.latest_model(cfg.name)
    assert last["domain"]["n_flagged"] == len(model["domain"]["flagged_ids"])
    assert len(model["domain"]["leverage"]) == last["domain"]["n_flagged"]
    if model["domain"]["flagged_ids"]:
        assert min(model["domain"]["leverage"]) > 0
    names = {c["name"] for c in doc["criteria"]}
    assert {"budget", "failure_fraction", "rmse"} <= names
    labels = stores.get_labels(cfg.name)
    assert len({(lab["candidate_id"], lab["fidelity"]) for lab in labels}) == len(labels)
    if rule == "cost_aware":
        cheap = [lab for lab in labels if lab["fidelity"] == "chgnet"]
        assert cheap, "the cost-aware rule never chose the cheap fidelity"
        assert doc["cost_spent"] == pytest.approx(sum(lab["cost"] for lab in labels))
        model = stores.latest_model(cfg.name)
        assert model["cheap_training_ids"] and len(model["mean"]) == 2 * len(
            stores.candidate_table(cfg.name, ["features"])[0]["features"]
        )
    if "plateau_window" in cfg.stopping.model_fields_set:
        assert "plateau" in doc["stop_reason"]


def test_ground_state_campaign_records_hulls(memory_store, write_config, tmp_path):
    """The ground_state rule with the missing_ground_states criterion: end members in the
    initial design, P(on hull) and hull distances stored each iteration, the expected
    number of missing ground states in the metrics and among the criteria (tolerance 0:
    the sum of P(on hull) over unlabelled candidates), and the report's hull plot
    coloured by P(on hull)."""
    from alcampaign.campaign.status import status_record

    cfg, stores = _campaign(
        write_config,
        memory_store,
        tmp_path,
        acquisition={"rule": "ground_state", "batch_size": 2, "n_samples": 200},
        stopping={"max_oracle_calls": 10, "rmse_target": None, "min_labels": 5,
                  "missing_ground_states": 0.1, "hull_tolerance": 0.0},
    )
    name = cfg.name
    doc = stores.get_campaign(name)
    assert doc["state"] == "stopped", doc["stop_reason"]
    assert {h["rule"] for h in doc["history"][:-1]} == {"ground_state"}
    cands = stores.candidate_table(name, ["acquisition", "composition", "state"])
    ends = [c for c in cands if (c["acquisition"] or {}).get("rule") == "initial_end_member"]
    assert sorted(tuple(sorted(c["composition"])) for c in ends) == [("Au",), ("Cu",)]
    ids, values, columns = stores.read_block(name, "ground_states")
    assert columns == ["hull_distance", "p_ground_state"] or columns == [
        "p_ground_state", "hull_distance"
    ]
    p = values[:, columns.index("p_ground_state")]
    assert len(ids) == len(cands) and np.all((p >= 0) & (p <= 1))
    labelled = {c["candidate_id"] for c in cands if c["state"] == "labelled"}
    unlabelled_p = sum(pi for cid, pi in zip(ids, p, strict=True) if cid not in labelled)
    missing = doc["metrics"]["missing_ground_states"]
    assert missing == pytest.approx(unlabelled_p)
    assert status_record(doc)["metrics"]["missing_ground_states"] == missing
    crit = {c["name"]: c for c in doc["criteria"]}["missing_ground_states"]
    assert crit["value"] == missing and crit["threshold"] == 0.1
    if "ground states found" in doc["stop_reason"]:
        assert missing < 0.1
    from alcampaign.campaign.query import read_ground_states

    table = read_ground_states(stores, name)  # what `alcampaign query` shows
    assert set(table) == set(ids)
    assert sum(v[0] for cid, v in table.items() if cid not in labelled) == pytest.approx(missing)
    _report_shows_p_on_hull(stores, name, table, tmp_path)


def _report_shows_p_on_hull(stores, name, table, tmp_path):
    """The report's hull plot colours labelled and predicted candidates by their stored
    P(on hull) (one colour bar) and draws the labelled hull; the page names the most
    probable unlabelled ground state."""
    import json

    import matplotlib.pyplot as plt

    from alcampaign.report.build import collect, hull_table, write_report
    from alcampaign.report.plots import convex_hull

    data = collect(stores, name)
    hull = hull_table(data)
    assert hull["p_on_hull"] == [table[cid][0] for cid in hull["ids"]]
    pred = hull["predicted"]
    assert pred["p_on_hull"] == [table[cid][0] for cid in pred["ids"]]
    fig = convex_hull(data, hull)
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "P(on hull)"]
    assert len(bars) == 1
    ax = fig.axes[0]
    coloured = [c for c in ax.collections if c.get_array() is not None]
    drawn = sorted(np.concatenate([c.get_array() for c in coloured]).round(12))
    stored = sorted(np.array([p for p, _ in table.values()]).round(12))
    assert drawn == stored  # every candidate once, at its P(on hull)
    assert "labelled hull" in ax.get_legend_handles_labels()[1]
    assert "expected missing ground states" in ax.get_title()
    plt.close(fig)
    info = write_report(data, tmp_path / "report")
    assert "convex_hull.png" in info["plots"]
    best = max((p, cid) for cid, (p, _) in table.items() if cid in pred["ids"])
    assert info["most_probable_unlabelled_ground_state"]["p_on_hull"] == best[0]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "most often on the sampled hulls" in page
    json.loads((tmp_path / "report" / "summary.json").read_text())
