"""The current model's predictions at candidates (campaign/predictions.py) and the
query rows built on them (campaign/query.py), on an in-memory store."""

from __future__ import annotations

import numpy as np
import pytest

from alcampaign.campaign.predictions import model_predictor, predict_candidates
from alcampaign.campaign.query import COLUMNS, QueryFilter, candidate_row, query_candidates
from alcampaign.config import ConfigError
from alcampaign.errors import CampaignNotFound
from alcampaign.science.learning import FittedModel, design_features
from alcampaign.science.surrogate import BayesianLinearRegression, make_surrogate
from alcampaign.store.facade import CampaignStores, label_document

D = 5


def _stores(memory_store, blocks: bool) -> CampaignStores:
    stores = CampaignStores.from_job_store(memory_store)
    if not blocks:
        stores.blocks = None
    return stores


def _pool(stores, name: str, n: int, rng, embedding: bool = False) -> list[dict]:
    docs = [
        {
            "campaign": name,
            "candidate_id": f"c{i:03d}",
            "formula": "CuAu" if i % 2 else "Cu3Au",
            "n_sites": 4,
            "state": "pool",
            "composition": {"Cu": 2 + i % 2, "Au": 2 - i % 2},
            "features": rng.normal(size=D).tolist(),
            "prescreen": {"energy_per_atom": float(rng.normal()), "embedding": None},
        }
        for i in range(n)
    ]
    if embedding:
        for d in docs:
            d["prescreen"]["embedding"] = (3.0 + 2.0 * rng.normal(size=D)).tolist()
    stores.create_campaign(name, {"oracle": {"fidelity": "emt"}})
    stores.insert_candidates(name, docs)
    return docs


def _model_doc(model, featurizer: str = "cluster", **extra) -> dict:
    return {"iteration": 2, "featurizer": {"kind": featurizer}, **model.to_dict(), **extra}


@pytest.mark.parametrize("blocks", [True, False])
@pytest.mark.parametrize("kind", ["bayesian_linear", "ensemble"])
def test_predictions_are_the_surrogates_own(memory_store, blocks, kind):
    stores = _stores(memory_store, blocks)
    rng = np.random.default_rng(0)
    docs = _pool(stores, "p", 30, rng)
    X = np.array([d["features"] for d in docs])
    model = make_surrogate(kind).fit(X[:12], X[:12] @ rng.normal(size=D) - 3.0)
    stores.add_model({"campaign": "p", **_model_doc(model)})
    pred = predict_candidates(stores, "p")
    want = model.predict(X)
    assert pred.ids == [d["candidate_id"] for d in docs] and pred.iteration == 2
    np.testing.assert_allclose(pred.mean, want.mean, rtol=1e-10)
    np.testing.assert_allclose(pred.std, want.std, rtol=1e-7)


def test_multi_fidelity_predicts_the_dear_oracle():
    """Joint rows [x, x] and the dear targets' mean added back, as FittedModel does."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, D))
    rows = np.hstack([X, X])
    model = BayesianLinearRegression(center=False).fit(rows, rows @ rng.normal(size=2 * D))
    fitted = FittedModel(model, True, (-4.0, -3.5))
    predictor = model_predictor(_model_doc(model, fidelity_offsets=[-4.0, -3.5]))
    np.testing.assert_allclose(predictor.predict(X).mean, fitted.predict(X).mean, rtol=1e-10)
    np.testing.assert_allclose(predictor.predict(X).std, fitted.predict(X).std, rtol=1e-7)
    np.testing.assert_allclose(
        predictor.predict(X).mean, X @ (model.mean_[:D] + model.mean_[D:]) - 4.0
    )


def test_chgnet_embeddings_are_standardised_over_the_pool_as_the_controller_does(memory_store):
    stores = _stores(memory_store, blocks=False)
    rng = np.random.default_rng(2)
    docs = _pool(stores, "e", 25, rng, embedding=True)
    Z = design_features("chgnet_embedding", np.array([d["prescreen"]["embedding"] for d in docs]))
    model = BayesianLinearRegression().fit(Z[:10], Z[:10] @ rng.normal(size=D + 1))
    stores.add_model({"campaign": "e", **_model_doc(model, "chgnet_embedding")})
    pred = predict_candidates(stores, "e")
    np.testing.assert_allclose(pred.mean, model.predict(Z).mean, rtol=1e-10)


def test_no_prediction_without_a_usable_model(memory_store):
    stores = _stores(memory_store, blocks=True)
    rng = np.random.default_rng(3)
    docs = _pool(stores, "n", 8, rng)
    assert predict_candidates(stores, "n") is None  # no model yet
    X = np.array([d["features"] for d in docs])
    model = make_surrogate("ensemble").fit(X, X.sum(axis=1))
    old = _model_doc(model)
    del old["member_offsets"]  # an ensemble stored before its members' offsets were
    assert model_predictor(old) is None
    other = BayesianLinearRegression().fit(np.hstack([X, X]), X.sum(axis=1))
    assert predict_candidates(stores, "n", _model_doc(other)) is None  # other features


def test_rows_keep_every_energy_in_its_own_column():
    cand = {
        "candidate_id": "a",
        "formula": "CuAu",
        "n_sites": 4,
        "state": "labelled",
        "acquisition": {"iteration": 3},
        "prescreen": {"energy_per_atom": -3.9},
    }
    row = candidate_row(cand, {"energy_per_atom": -4.1, "status": "success"}, (-4.0, 0.02))
    assert list(row) == list(COLUMNS)
    assert (row["label_energy_per_atom"], row["chgnet_energy_per_atom"]) == (-4.1, -3.9)
    assert (row["predicted_energy_per_atom"], row["predicted_std"]) == (-4.0, 0.02)
    bare = candidate_row({"candidate_id": "b"}, None, None)
    assert all(bare[c] is None for c in COLUMNS if c != "candidate_id")


def test_query_filters_and_sorts_by_the_chosen_energy(memory_store):
    from pymatgen.core import Lattice, Structure

    stores = _stores(memory_store, blocks=True)
    rng = np.random.default_rng(4)
    docs = _pool(stores, "q", 12, rng)
    X = np.array([d["features"] for d in docs])
    model = BayesianLinearRegression().fit(X, X @ rng.normal(size=D))
    stores.add_model({"campaign": "q", **_model_doc(model)})
    s = Structure(
        Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )
    labelled = [d["candidate_id"] for d in docs[:4]]
    stores.add_labels(
        [
            label_document(
                "q",
                cid,
                "emt",
                oracle={},
                cost=1.0,
                iteration=1,
                energy_per_atom=-4.0 + k,
                structure=s,
            )
            for k, cid in enumerate(labelled)
        ]
    )
    stores.set_state("q", labelled, "labelled")
    rows = query_candidates(stores, "q", QueryFilter()).rows
    assert [r["candidate_id"] for r in rows[:4]] == labelled  # by label energy
    assert all(r["label_energy_per_atom"] is None for r in rows[4:])
    assert all(r["chgnet_energy_per_atom"] is not None and r["predicted_std"] > 0 for r in rows)
    by_chgnet = query_candidates(stores, "q", QueryFilter(energy="chgnet", emax=0.0)).rows
    chgnet = [r["chgnet_energy_per_atom"] for r in by_chgnet]
    assert chgnet == sorted(chgnet) and all(e <= 0.0 for e in chgnet)
    assert len(by_chgnet) == sum(d["prescreen"]["energy_per_atom"] <= 0.0 for d in docs)
    window = query_candidates(stores, "q", QueryFilter(emin=-3.5, emax=-1.5)).rows
    assert [r["label_energy_per_atom"] for r in window] == [-3.0, -2.0]
    assert len(query_candidates(stores, "q", QueryFilter(state="labelled")).rows) == 4
    with pytest.raises(ConfigError, match="--energy"):
        query_candidates(stores, "q", QueryFilter(energy="dft"))
    with pytest.raises(ConfigError, match="--emin"):
        query_candidates(stores, "q", QueryFilter(emin=1.0, emax=0.0))
    with pytest.raises(CampaignNotFound, match="no campaign named 'nope'"):
        query_candidates(stores, "nope", QueryFilter())
