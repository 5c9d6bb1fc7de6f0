"""The stored documents' models: one definition for the jobs, the API and the docs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure

from alcampaign.campaign.documents import (
    AcquisitionEntry,
    Campaign,
    Candidate,
    DecisionEntry,
    DomainRecord,
    Label,
    api_view,
)
from alcampaign.campaign.ingest import label_for
from alcampaign.config import OracleConfig


def _candidate(**kw) -> Candidate:
    fields = {
        "campaign": "c",
        "candidate_id": "id0",
        "structure": {"@class": "Structure"},
        "formula": "CuAu",
        "composition": {"Cu": 1.0, "Au": 1.0},
        "n_sites": 2,
        "source": {"parent": "x.cif", "supercell_size": 2, "backend": "icet"},
        "features": [1.0, 0.5],
        "prescreen": None,
        "state": "pool",
        "acquisition": None,
    }
    return Candidate(**{**fields, **kw})


def test_a_misspelt_or_invalid_field_is_refused():
    with pytest.raises(ValidationError, match="n_site"):
        _candidate(n_site=2)
    with pytest.raises(ValidationError, match="state"):
        _candidate(state="done")


def test_to_store_writes_what_was_set_and_the_defaults_not_unset_nones():
    doc = _candidate().to_store()
    assert doc["prescreen"] is None and doc["acquisition"] is None  # set explicitly
    assert "cheap_state" not in doc and "cheap_acquisition" not in doc  # written later
    entry = AcquisitionEntry(
        candidate_id="id0", fidelity="emt", iteration=0, rule="initial_random", score=0, time="t"
    ).to_store()
    assert entry["cheap"] is False and entry["external"] is False  # defaults are written
    assert isinstance(entry["score"], float)


def test_nested_documents_are_stored_as_plain_dicts():
    entry = DecisionEntry(
        iteration=0,
        n_labels=3,
        n_cheap_labels=0,
        n_oracle_calls=3,
        n_answers=3,
        n_outstanding=0,
        cost_spent=3.0,
        metrics={"rmse": 0.01},
        decision={"stop": False, "failed": False, "reason": None, "criteria": []},
        rule="max_variance",
        acquired=["a"],
        acquired_cheap=[],
        diversity=None,
        domain=DomainRecord(n_flagged=2, limits={"mahalanobis": 3.0, "leverage": 0.5}),
        seconds=0.1,
        time="t",
    ).to_store()
    assert entry["domain"] == {"n_flagged": 2, "limits": {"mahalanobis": 3.0, "leverage": 0.5}}
    assert entry["decision"]["criteria"] == [] and isinstance(entry["decision"], dict)


def test_labels_from_answers():
    s = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    oracle = OracleConfig(fidelity="emt", cost=2.0)
    ok = label_for("c", {"candidate_id": "a", "energy": -3.0, "structure": s}, oracle, 4)
    assert ok.status == "success" and ok.energy_per_atom == -3.0 and ok.iteration == 4
    doc = ok.to_store()
    assert doc["final_structure"]["@class"] == "Structure" and doc["cost"] == 2.0
    assert "kind" not in doc  # an MD field, unset for a campaign's label
    failed = label_for("c", {"candidate_id": "b", "energy": None, "structure": None}, oracle, 4)
    assert failed.status == "failed" and failed.energy_per_atom is None
    assert "energy" not in failed.to_store()
    # An MD frame needs forces as well.
    md = label_for(
        "c",
        {"candidate_id": "f", "energy": -3.0, "structure": s, "forces": None},
        oracle,
        None,
        require_forces=True,
        kind="md_frame",
        step=7,
        source="md",
    )
    assert md.status == "failed" and "forces" in md.error and md.step == 7


def test_api_view_makes_fields_optional_and_keeps_descriptions():
    view = api_view("CampaignView", Campaign)
    assert view().model_dump()["name"] is None
    assert view.model_fields["n_oracle_calls"].description == (
        Campaign.model_fields["n_oracle_calls"].description
    )
    assert Campaign.model_fields["name"].is_required()  # the stored model is unchanged


def test_openapi_shows_the_document_descriptions(memory_store):
    from alcampaign.serve.api import create_app
    from alcampaign.store.facade import CampaignStores

    schemas = create_app(CampaignStores.from_job_store(memory_store)).openapi()["components"][
        "schemas"
    ]
    views = [("CandidateDoc", Candidate), ("LabelDoc", Label), ("CampaignDoc", Campaign)]
    for view, model in views:
        props = schemas[view]["properties"]
        for key, info in model.model_fields.items():
            assert props[key]["description"] == info.description, (view, key)
    assert "DecisionEntry" in schemas and "SegmentEntry" in schemas
