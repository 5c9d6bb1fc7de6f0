"""The stored documents, described once: what each collection holds, field by field.

The jobs build their documents with these models and write ``to_store()`` (a plain
dict; an optional field nobody set, e.g. a candidate's ``cheap_state``, stays absent
until the step that owns it writes it); the HTTP API shows them in its
OpenAPI schema (:func:`api_view`), and docs/ points here. As atomate2's task documents,
one definition serves the store, the API and the documentation.

=====================  ============================================================
collection             documents
=====================  ============================================================
``candidates``         :class:`Candidate` (enumerated orderings), :class:`Frame` (MD)
``labels``             :class:`Label` (one oracle answer per candidate and fidelity)
``models``             :class:`SurrogateModel` (campaigns), :class:`PotentialModel` (MD)
``campaigns``          :class:`Campaign`, with :class:`AcquisitionEntry` questions and
                       :class:`DecisionEntry` / :class:`SegmentEntry` history entries
=====================  ============================================================

Energies are in eV (``energy``) or eV/atom (``energy_per_atom``), forces in eV/A,
times as ISO-8601 UTC strings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

CandidateState = Literal["pool", "acquired", "requested", "labelled", "failed"]
CampaignState = Literal["running", "waiting", "stopped", "failed", "enumerated"]


class StoredDocument(BaseModel):
    """Base of every stored document: unknown fields are refused when building one."""

    model_config = ConfigDict(extra="forbid")

    def to_store(self) -> dict[str, Any]:
        """The document as the plain dict to write.

        An optional field left at ``None`` without being set is left out (another step
        writes it later, e.g. a candidate's ``cheap_state``); every other field is
        written, defaults included.
        """
        out = {
            key: _stored(getattr(self, key))
            for key in type(self).model_fields
            if key in self.model_fields_set or getattr(self, key) is not None
        }
        out.update({k: _stored(v) for k, v in (self.model_extra or {}).items()})
        return out


def _stored(value: Any) -> Any:
    if isinstance(value, StoredDocument):
        return value.to_store()
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value


# -- candidates ------------------------------------------------------------------------


class CandidateBase(StoredDocument):
    """Fields every document of the ``candidates`` collection has."""

    campaign: str = Field(description="Campaign name.")
    candidate_id: str = Field(
        description="Stable id: a hash of the canonical structure (orderings) or the MD "
        "step and a hash of the positions (frames)."
    )
    structure: dict[str, Any] = Field(description="pymatgen Structure dict.")
    formula: str = Field(description="Reduced formula (orderings) or chemical formula (frames).")
    n_sites: int = Field(description="Atoms in the cell.")
    state: CandidateState = Field(
        description="pool, acquired (asked in the workflow), requested (asked an external "
        "oracle), labelled or failed."
    )
    acquisition: dict[str, Any] | None = Field(
        None, description="When and why it was asked: iteration, rule, score, time."
    )


class Candidate(CandidateBase):
    """An enumerated ordering of the parent structure."""

    composition: dict[str, float] = Field(description="Element amounts in the cell.")
    source: dict[str, Any] = Field(
        description="Where it came from: parent structure, supercell size, enumeration backend."
    )
    features: list[float] = Field(description="Feature vector (cluster vector by default).")
    prescreen: dict[str, Any] | None = Field(
        None,
        description="CHGNet prescreen: energy_per_atom, forces, stress, magmoms, embedding, "
        "model and version; null until screened.",
    )
    cheap_state: CandidateState | None = Field(
        None, description="State at the cheap fidelity (multi-fidelity campaigns)."
    )
    cheap_acquisition: dict[str, Any] | None = Field(
        None, description="When and why it was asked at the cheap fidelity."
    )


class Frame(CandidateBase):
    """A frame of an on-the-fly MD campaign, recorded when the potential was unsure."""

    kind: Literal["md_frame"] = Field("md_frame", description="Marks an MD frame.")
    source: Literal["bootstrap", "md"] = Field(
        description="bootstrap (a displaced copy of the cell) or md (met during the run)."
    )
    step: int = Field(description="MD step of the frame.")
    time_fs: float = Field(description="Simulated time of the frame (fs).")
    flags: dict[str, Any] | None = Field(
        description="Uncertainty and extrapolation measures, their limits, and the reasons "
        "the frame was asked (null for bootstrap frames)."
    )
    target_temperature: float | None = Field(
        None, description="Thermostat target at the frame (K)."
    )
    environments: list[list[float]] | None = Field(
        None, description="Per-atom descriptors, once trained on (for the domain)."
    )
    time: str = Field(description="When the frame was recorded.")


# -- labels ----------------------------------------------------------------------------


class Label(StoredDocument):
    """One oracle answer, keyed by (campaign, candidate id, fidelity); never overwritten."""

    campaign: str = Field(description="Campaign name.")
    candidate_id: str = Field(description="The candidate (or frame) asked.")
    fidelity: str = Field(description="Name of the oracle fidelity that answered.")
    status: Literal["success", "failed"] = Field(description="success or failed.")
    energy_per_atom: float | None = Field(description="Energy per atom (eV/atom); null if failed.")
    energy: float | None = Field(None, description="Energy of the final cell (eV).")
    forces: list[Any] | None = Field(None, description="Forces on the final cell (eV/A).")
    stress: list[Any] | None = Field(None, description="Stress of the final cell.")
    final_structure: dict[str, Any] | None = Field(
        None, description="Final (relaxed) structure, pymatgen dict."
    )
    oracle: dict[str, Any] = Field(description="Maker import path and keyword arguments.")
    job_uuid: str | None = Field(description="The jobflow job that answered.")
    cost: float = Field(description="Cost of the call, in the oracle's unit.")
    iteration: int | None = Field(description="Controller iteration that asked.")
    time: str = Field(description="When the answer was stored.")
    error: str | None = Field(None, description="Why a failed call failed.")
    kind: Literal["md_frame"] | None = Field(None, description="md_frame for an MD frame.")
    step: int | None = Field(None, description="MD step of the frame.")
    source: str | None = Field(None, description="Frame source (bootstrap or md).")


# -- models ----------------------------------------------------------------------------


class DomainRecord(StoredDocument):
    """The domain of applicability of a model, over the candidate pool."""

    n_flagged: int = Field(description="Candidates outside the domain.")
    limits: dict[str, float | None] = Field(description="Mahalanobis and leverage limits.")
    flagged_ids: list[str] | None = Field(None, description="Ids of the flagged candidates.")
    mahalanobis: list[float] | None = Field(None, description="Their Mahalanobis distances.")
    leverage: list[float] | None = Field(None, description="Their leverages.")


class SurrogateModel(StoredDocument):
    """One surrogate version of a campaign, keyed by (campaign, iteration).

    The surrogate's own fields (``kind``, ``alpha``, ``beta``, ``mean``, ``covariance``,
    ...) come from its ``to_dict()``; ``Surrogate.from_dict`` reads them back.
    """

    model_config = ConfigDict(extra="allow")  # the surrogate's to_dict() fields

    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Controller iteration that fitted it.")
    kind: str = Field(description="Surrogate kind (bayesian_linear, ensemble).")
    featurizer: dict[str, Any] = Field(description="Feature kind and cluster cutoffs.")
    training_ids: list[str] = Field(description="Candidates with dear labels trained on.")
    cheap_training_ids: list[str] = Field(description="Candidates with cheap labels trained on.")
    fidelity_offsets: list[float] | None = Field(
        description="(dear, cheap) target means of a multi-fidelity model."
    )
    cv_predictions: dict[str, list[float]] | None = Field(
        description="Out-of-fold mean and std of each dear label (eV/atom)."
    )
    n_train: int | None = Field(None, description="Energy rows trained on.")
    alpha: float | None = Field(None, description="Prior precision.")
    beta: float | None = Field(None, description="Noise precision (energies).")
    offset: float | None = Field(None, description="Target offset (eV/atom).")
    log_evidence: float | None = Field(None, description="Log marginal likelihood.")
    mean: list[float] | None = Field(None, description="Posterior mean of the weights.")
    covariance: list[list[float]] | None = Field(None, description="Posterior covariance.")
    metrics: dict[str, Any] = Field(
        description="Metrics (eV/atom): the pool-wide estimate with its interval, plain CV, "
        "calibration; 'accuracy' names the estimate."
    )
    calibration: dict[str, Any] | None = Field(
        None,
        description="Recalibration of the predictive, applied by every reader: "
        "sigma = scale * the posterior's sigma (kind variance_scale).",
    )
    audit_ids: list[str] = Field(
        default_factory=list, description="Audit candidates (labelled, never trained on)."
    )
    domain: DomainRecord = Field(description="Domain of applicability over the pool.")
    time: str = Field(description="When the model was stored.")


class PotentialModel(StoredDocument):
    """One version of the linear potential of an on-the-fly MD campaign."""

    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Update count (0: the first fit).")
    kind: Literal["linear_potential"] = Field("linear_potential", description="Model kind.")
    featurizer: dict[str, Any] = Field(description="Descriptor settings.")
    training_ids: list[str] = Field(description="Frames trained on.")
    n_train: int = Field(description="Frames trained on.")
    alpha: float = Field(description="Prior precision.")
    beta: float = Field(description="Noise precision of energies.")
    beta_force: float = Field(description="Noise precision of forces.")
    log_evidence: float = Field(description="Log marginal likelihood.")
    potential: dict[str, Any] = Field(description="State to rebuild the potential from.")
    seconds: float = Field(description="Time the update took (s).")
    time: str = Field(description="When the model was stored.")


# -- campaigns -------------------------------------------------------------------------


class AcquisitionEntry(StoredDocument):
    """One question, recorded in the campaign document before its oracle runs."""

    candidate_id: str = Field(description="Candidate asked.")
    fidelity: str = Field(description="Fidelity asked.")
    cheap: bool = Field(False, description="Asked at the cheap fidelity.")
    external: bool = Field(False, description="Asked an oracle outside the workflow.")
    iteration: int = Field(description="Iteration whose labels it becomes.")
    rule: str = Field(
        description="Acquisition rule (initial_end_member or initial_random for the first "
        "design)."
    )
    score: float = Field(description="The rule's score of the candidate.")
    time: str = Field(description="When it was asked.")


class Verdict(StoredDocument):
    """The stopping portfolio's judgement at one iteration."""

    stop: bool = Field(description="Whether the campaign stopped here.")
    failed: bool = Field(description="Whether it stopped as failed.")
    reason: str | None = Field(description="Why it stopped.")
    criteria: list[dict[str, Any]] = Field(
        description="Every criterion: name, value, threshold, met, kind (limit or quality)."
    )


class DecisionEntry(StoredDocument):
    """One controller decision, in the campaign's ``history``."""

    iteration: int = Field(description="Controller iteration.")
    n_labels: int = Field(description="Successful dear-oracle labels.")
    n_cheap_labels: int = Field(description="Successful cheap-oracle labels.")
    n_oracle_calls: int = Field(description="Dear-oracle calls so far (failed ones included).")
    n_answers: int = Field(description="Stored answers at every fidelity.")
    n_outstanding: int = Field(description="External questions still open.")
    cost_spent: float = Field(description="Cost of every label.")
    metrics: dict[str, Any] = Field(description="Accuracy and calibration metrics.")
    decision: Verdict = Field(description="The stopping judgement.")
    rule: str | None = Field(description="Rule that chose the next questions.")
    acquired: list[str] = Field(description="Candidates asked of the dear oracle.")
    acquired_cheap: list[str] = Field(description="Candidates asked of the cheap oracle.")
    diversity: dict[str, Any] | None = Field(description="Coverage and diversity metrics.")
    domain: DomainRecord | None = Field(description="Domain summary (n_flagged, limits).")
    seconds: float = Field(description="Time the decision took (s).")
    time: str = Field(description="When it was decided.")


class SegmentEntry(StoredDocument):
    """One MD segment of an on-the-fly MD campaign, in the campaign's ``history``."""

    iteration: int = Field(description="Segment number.")
    start_step: int = Field(description="First MD step of the segment.")
    end_step: int = Field(description="Step where it ended.")
    triggered: bool = Field(description="Whether a limit was crossed (a frame was asked).")
    frame_id: str | None = Field(description="The frame asked, if any.")
    flags: dict[str, Any] = Field(description="Measures at the last step and their limits.")
    model_iteration: int = Field(description="Potential version used.")
    n_oracle_calls: int = Field(description="Oracle calls before the segment.")
    budget_left: bool = Field(description="Whether the oracle budget allowed a question.")
    trajectory: dict[str, Any] = Field(
        description="Per step: step, time, timestep, temperatures, energy, uncertainties."
    )
    seconds: float = Field(description="Time the segment took (s).")
    time: str = Field(description="When it ended.")
    metrics: dict[str, Any] = Field(description="Empty (kept for the status record).")


class Campaign(StoredDocument):
    """A campaign: its config, state, counts and history (the status record's source)."""

    model_config = ConfigDict(extra="allow")  # operational fields (lease, blocks)

    name: str = Field(description="Campaign name (unique in its store).")
    kind: str | None = Field(None, description="otf_md for an on-the-fly MD campaign.")
    config: dict[str, Any] = Field(description="The validated campaign config.")
    state: CampaignState = Field(description="running, waiting, stopped, failed, enumerated.")
    iteration: int = Field(description="Last controller iteration (or MD segment).")
    n_oracle_calls: int = Field(description="Oracle calls at the dear fidelity.")
    cost_spent: float | None = Field(None, description="Cost of every label.")
    stop_reason: str | None = Field(description="Why the campaign stopped.")
    metrics: dict[str, Any] | None = Field(description="Latest accuracy and calibration metrics.")
    criteria: list[dict[str, Any]] | None = Field(None, description="Latest stopping criteria.")
    history: list[DecisionEntry | SegmentEntry] = Field(description="One entry per iteration.")
    acquisitions: list[AcquisitionEntry] | None = Field(
        None, description="Every question asked, in order."
    )
    parent: dict[str, Any] | None = Field(None, description="Disordered parent structure.")
    structure: dict[str, Any] | None = Field(None, description="MD: the simulated structure.")
    md_state: dict[str, Any] | None = Field(
        None, description="MD: positions, velocities, step, time, timestep to continue from."
    )
    md_summary: dict[str, Any] | None = Field(None, description="MD: summary once stopped.")
    enumeration: dict[str, Any] | None = Field(None, description="Enumeration summary.")
    prescreen: dict[str, Any] | None = Field(None, description="Prescreen summary.")
    lease: dict[str, Any] | None = Field(None, description="Controller lease (owner, expiry).")
    created_at: str = Field(description="Creation time.")
    updated_at: str = Field(description="Last update.")


def api_view(name: str, *models: type[BaseModel], doc: str | None = None) -> type[BaseModel]:
    """A copy of stored-document models with every field optional, for the HTTP API.

    The API serves projections (``_fields``), so any field may be absent; the
    descriptions are kept, so the OpenAPI schema documents the stored fields. Several
    models (e.g. :class:`Candidate` and :class:`Frame`, which share a collection) merge
    into one view. The models themselves are left unchanged.
    """
    fields: dict[str, Any] = {}
    for model in models:
        for key, info in model.model_fields.items():
            if key not in fields:
                fields[key] = (info.annotation | None, Field(None, description=info.description))
    view = create_model(name, __base__=BaseModel, **fields)
    view.__doc__ = doc or (models[0].__doc__ or "").strip().splitlines()[0]
    return view
