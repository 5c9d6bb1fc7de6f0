"""Register a campaign and store oracle answers: one path for campaigns and MD.

:func:`register` creates a campaign document once (a re-run changes nothing);
:func:`ingest_answers` turns oracle answers into :class:`~alcampaign.campaign.documents.Label`
documents (``failed`` when the oracle produced no energy), stores the new ones, moves
their candidates on (``labelled``/``failed``, at the fidelity asked) and recounts the
oracle calls. Both the disordered-structure campaign's ingest job and the on-the-fly MD
one call it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from pymatgen.core import Structure

from alcampaign.campaign.documents import Label
from alcampaign.store.facade import CampaignStores, answered_state, now

logger = logging.getLogger("alcampaign")


class OracleSettings(Protocol):
    """What a fidelity's config says about its oracle (campaign or MD config)."""

    maker: str
    kwargs: dict[str, Any]
    fidelity: str
    cost: float


def _plain(value: Any) -> Any:
    # FireWorks decodes MSON dicts into objects; the document holds the dict.
    return value.as_dict() if hasattr(value, "as_dict") else value


def register(stores: CampaignStores, config: dict, **fields: Any) -> dict:
    """Create the campaign document (config and ``fields``) unless it exists.

    Returns
    -------
    dict
        ``{"name": name}`` (the output of the register jobs).
    """
    name = config["name"]
    if stores.get_campaign(name) is None:
        stores.create_campaign(name, config, **{k: _plain(v) for k, v in fields.items()})
    return {"name": name}


def _array_list(value: Any) -> Any:
    return None if value is None else np.asarray(value, dtype=float).tolist()


def label_for(
    name: str,
    answer: dict,
    oracle: OracleSettings,
    iteration: int | None,
    require_forces: bool = False,
    **extra: Any,
) -> Label:
    """The label of one answer: ``success`` with an energy (and forces, if required)
    and a final structure, else ``failed``."""
    structure = answer.get("structure")
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    energy, forces = answer.get("energy"), answer.get("forces")
    ok = energy is not None and structure is not None
    ok = ok and (forces is not None or not require_forces)
    fields: dict[str, Any] = {
        "campaign": name,
        "candidate_id": answer["candidate_id"],
        "fidelity": oracle.fidelity,
        "oracle": {"maker": oracle.maker, "kwargs": oracle.kwargs},
        "job_uuid": answer.get("job_uuid"),
        "cost": oracle.cost,
        "iteration": iteration,
        "time": now(),
    }
    if ok:
        e = float(energy) / len(structure)
        fields.update(
            status="success",
            energy_per_atom=e,
            energy=e * len(structure),
            forces=_array_list(forces),
            stress=_array_list(answer.get("stress")),
            final_structure=structure.as_dict(),
        )
    else:
        what = "energy or forces" if require_forces else "energy"
        fields.update(
            status="failed",
            energy_per_atom=None,
            error=f"the oracle job produced no {what} (it failed)",
        )
    return Label(**fields, **extra)


def ingest_answers(
    stores: CampaignStores,
    name: str,
    labels: Sequence[tuple[Label, bool]],
    counted_fidelity: str,
) -> dict:
    """Store labels, move their candidates on, and recount the oracle calls.

    Parameters
    ----------
    labels
        ``(label, cheap)`` pairs: ``cheap`` says which candidate state moves (the
        cheap fidelity's ``cheap_state`` or ``state``).
    counted_fidelity
        The fidelity whose labels count as oracle calls.

    Returns
    -------
    dict
        ``n_new`` labels stored (an answer already stored is kept, not replaced),
        ``n_failed`` answers and ``n_oracle_calls`` so far.
    """
    moved: dict[tuple[bool, str], list[str]] = {}
    for label, cheap in labels:
        moved.setdefault((cheap, answered_state(label.status)), []).append(label.candidate_id)
    n_new = stores.add_labels([label.to_store() for label, _ in labels])
    for (cheap, state), cids in moved.items():
        stores.set_state(name, cids, state, cheap=cheap)
    n_calls, _ = stores.update_counts(name, counted_fidelity)
    n_failed = sum(len(v) for (_, st), v in moved.items() if st == "failed")
    logger.info(
        "%s: ingested %d answers (%d failed); %d oracle calls so far",
        name,
        len(labels),
        n_failed,
        n_calls,
    )
    return {"n_new": n_new, "n_failed": n_failed, "n_oracle_calls": n_calls}
