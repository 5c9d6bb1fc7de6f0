"""The current model's predictions at a campaign's candidates (eV/atom).

One path for ``alcampaign query``, the dashboard and its table cache: the latest
``models`` document -> the surrogate's own ``from_dict`` (with the multi-fidelity
offsets, as :class:`~alcampaign.science.learning.FittedModel` predicts the dear oracle)
-> ``predict`` at the candidates' design rows (recalibrated by the document's
``calibration``, :class:`~alcampaign.science.calibration.Calibration`), built
as the controller builds them
(:func:`~alcampaign.science.learning.design_features`: the stored feature vectors, or
the CHGNet embeddings standardised over the pool). Nothing here writes: a missing block
is not rebuilt, the candidates are read instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alcampaign.science.calibration import calibration_from_dict
from alcampaign.science.learning import FittedModel, centred_cheap_energy, design_features
from alcampaign.science.surrogate import surrogate_from_dict
from alcampaign.store.facade import BLOCK_FIELDS, CampaignStores, dotted

# The fields of a model document that a prediction reads (a projection that leaves
# out the out-of-fold predictions, training ids and domain flags).
MODEL_FIELDS = [
    "iteration",
    "kind",
    "featurizer",
    "mean",
    "covariance",
    "offset",
    "alpha",
    "beta",
    "beta_force",
    "fidelity_offsets",
    "n_members",
    "member_means",
    "member_offsets",
    "cheap_energy",
    "calibration",
]
# Rows predicted at once (bounds the memory of ``X @ covariance``).
PREDICT_ROWS = 20_000


@dataclass
class CandidatePredictions:
    """Predictions of the dear oracle's energy per atom at candidates.

    Attributes
    ----------
    ids
        Candidate ids, sorted, shape ``(n,)``.
    mean, std
        Predictive mean and total standard deviation (epistemic and aleatoric), eV/atom,
        shape ``(n,)``.
    iteration
        The model's iteration.
    """

    ids: list[str]
    mean: np.ndarray
    std: np.ndarray
    iteration: int | None

    def by_id(self) -> dict[str, tuple[float, float]]:
        """``{candidate_id: (mean, std)}``."""
        return {
            cid: (float(m), float(s))
            for cid, m, s in zip(self.ids, self.mean, self.std, strict=True)
        }


def latest_model(stores: CampaignStores, name: str) -> dict | None:
    """The latest model document of a campaign, only the fields a prediction reads."""
    its = [d["iteration"] for d in stores.models.query({"campaign": name}, ["iteration"])]
    if not its:
        return None
    it = max(its)
    return stores.models.query_one({"campaign": name, "iteration": it}, MODEL_FIELDS)


def model_predictor(model: dict | None) -> FittedModel | None:
    """The model document as a predictor of the dear oracle, or ``None`` where it
    holds no posterior the surrogate can read back (none yet, or an ensemble stored
    by a version that did not record its members' offsets)."""
    if not model or model.get("mean") is None or model.get("covariance") is None:
        return None
    try:
        surrogate = surrogate_from_dict(model)
    except ValueError:
        return None
    # The stored recalibration: every reader gets the calibrated predictive.
    calibration = calibration_from_dict(model.get("calibration"))
    offsets = model.get("fidelity_offsets")
    if offsets:
        return FittedModel(
            surrogate, True, (float(offsets[0]), float(offsets[1])), calibration=calibration
        )
    return FittedModel(surrogate, False, calibration=calibration)


def candidate_design(
    stores: CampaignStores, name: str, featurizer: str | None
) -> tuple[list[str], np.ndarray] | None:
    """Ids (sorted) and the design rows of every candidate that has features.

    Reads the block (``features``, or ``embedding`` for a model on CHGNet embeddings)
    where one is stored, else one projected query of the candidates; ``None`` when no
    candidate has them.
    """
    kind = "embedding" if featurizer == "chgnet_embedding" else "features"
    if stores.blocks is not None and stores.blocks.count({"campaign": name, "kind": kind}):
        ids, raw, _ = stores.read_block(name, kind)
    else:
        field = BLOCK_FIELDS[kind]
        docs = [
            (d["candidate_id"], dotted(d, field))
            for d in stores.candidates.query({"campaign": name}, ["candidate_id", field])
        ]
        docs = sorted((cid, v) for cid, v in docs if v is not None)
        if not docs:
            return None
        ids, raw = [cid for cid, _ in docs], np.array([v for _, v in docs], dtype=float)
    if not len(ids):
        return None
    return list(ids), design_features(featurizer or "", np.asarray(raw, dtype=float))


def _with_cheap_energy(
    stores: CampaignStores, name: str, ids: list[str], X: np.ndarray
) -> np.ndarray | None:
    """The design rows plus the delta-learning column of a cluster expansion offered the
    prescreen energy (centred on the pool as the controller centres it); ``None``
    without the prescreen energies of these candidates."""
    if stores.blocks is None or not stores.blocks.count(
        {"campaign": name, "kind": "prescreen_energy"}
    ):
        return None
    e_ids, e, _ = stores.read_block(name, "prescreen_energy")
    if list(e_ids) != list(ids):
        return None
    return np.column_stack([X, centred_cheap_energy(e[:, 0])])


def predict_rows(predictor: FittedModel, X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and standard deviation at design rows ``X`` (in chunks of
    ``PREDICT_ROWS``); ``None`` when the rows do not fit the model (another featurizer)."""
    n = X.shape[0]
    mean, std = np.empty(n), np.empty(n)
    for lo in range(0, n, PREDICT_ROWS):
        try:
            p = predictor.predict(X[lo : lo + PREDICT_ROWS])
        except ValueError:
            return None
        mean[lo : lo + PREDICT_ROWS], std[lo : lo + PREDICT_ROWS] = p.mean, p.std
    return mean, std


def predict_candidates(
    stores: CampaignStores, name: str, model: dict | None = None
) -> CandidatePredictions | None:
    """The model's predictions at every candidate with features.

    Parameters
    ----------
    model
        A model document (at least :data:`MODEL_FIELDS`); default the latest.

    Returns
    -------
    The predictions, or ``None`` without a usable model or features.
    """
    model = latest_model(stores, name) if model is None else model
    predictor = model_predictor(model)
    if predictor is None:
        return None
    design = candidate_design(stores, name, (model.get("featurizer") or {}).get("kind"))
    if design is None:
        return None
    ids, X = design
    if (model.get("cheap_energy") or {}).get("offered"):
        X = _with_cheap_energy(stores, name, ids, X)
        if X is None:
            return None
    out = predict_rows(predictor, X)
    if out is None:
        return None
    return CandidatePredictions(ids, out[0], out[1], model.get("iteration"))
