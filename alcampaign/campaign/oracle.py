"""Oracles: any jobflow/atomate2 ``Maker``, named by import path in a config.

One place builds an oracle job for a question (:func:`oracle_job`) and one describes
its answer (:func:`answer_refs` while the job is pending, :func:`stored_answer` from a
finished job's stored output): the fields every atomate2 relaxation or static task
document has (``output.energy``, ``structure``, ``output.forces``, ``output.stress``),
so any atomate2 Maker can be the oracle of a campaign or of an on-the-fly MD run.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from jobflow import Job, Maker
from pymatgen.core import Structure

from alcampaign.config import ConfigError


def import_maker(path: str, kwargs: dict[str, Any]) -> Maker:
    """Instantiate an oracle Maker from its import path and keyword arguments.

    Raises
    ------
    ConfigError
        The path does not import, is not a Maker, or rejects the arguments.
    """
    module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"oracle.maker: cannot import {path!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Maker)):
        raise ConfigError(f"oracle.maker: {path!r} is not a jobflow Maker class")
    from monty.json import MontyDecoder

    try:
        # Objects among the arguments are stored as MSON dicts (see maker_settings).
        return cls(**MontyDecoder().process_decoded(dict(kwargs)))
    except TypeError as exc:
        raise ConfigError(f"oracle.kwargs: {path} rejects them ({exc})") from None


def maker_settings(maker: Maker) -> tuple[str, dict[str, Any]]:
    """The import path and keyword arguments that rebuild ``maker`` (the inverse of
    :func:`import_maker`), for a config's ``oracle.maker`` and ``oracle.kwargs``.

    Only fields that differ from the class defaults are kept; objects among them are
    written as MSON dicts.

    Raises
    ------
    ConfigError
        ``maker`` is not a dataclass Maker, or not importable by its class name.
    """
    from monty.json import jsanitize

    cls = type(maker)
    path = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(maker, Maker) and dataclasses.is_dataclass(maker)) or "<" in path:
        raise ConfigError(f"oracle: {path} is not an importable dataclass Maker")
    try:
        default = cls()
    except TypeError:  # a Maker with required fields: keep every field
        default = None
    kwargs = {
        f.name: getattr(maker, f.name)
        for f in dataclasses.fields(maker)
        if f.init and (default is None or getattr(maker, f.name) != getattr(default, f.name))
    }
    return path, jsanitize(kwargs, strict=True, enum_values=True)


def check_oracle_elements(maker: Maker, elements: list[str]) -> None:
    """Refuse elements an oracle cannot handle, where that can be known in advance.

    Known here: ASE's EMT (its parameter table) and CHGNet force fields (the model's
    element embedding). Other oracles are trusted.

    Raises
    ------
    ConfigError
        Naming the oracle and the elements.
    """
    name = type(maker).__name__
    unknown: list[str] = []
    if "Emt" in name or "EMT" in name:
        from ase.calculators.emt import parameters

        unknown = [el for el in elements if el not in parameters]
    elif str(getattr(maker, "force_field_name", "")).upper().endswith("CHGNET"):
        from alcampaign.chgnet.prescreen import check_elements, load_chgnet

        try:
            check_elements(elements, load_chgnet())
        except ValueError as exc:
            unknown = [str(exc)]
    if unknown:
        raise ConfigError(
            f"oracle {name} cannot compute {', '.join(unknown)}; choose another "
            "oracle.maker or change the structure"
        )


def oracle_job(
    maker: Maker, structure: Structure, campaign: str, candidate_id: str, fidelity: str
) -> Job:
    """The oracle's job for one question, named ``"<fidelity> <candidate id>"`` and
    carrying (campaign, candidate id, fidelity) in its metadata, by which a finished
    answer is found again after a crash."""
    job_ = maker.make(structure)
    job_.name = f"{fidelity} {candidate_id}"
    job_.update_metadata({"campaign": campaign, "candidate_id": candidate_id, "fidelity": fidelity})
    return job_


def answer_refs(job_: Job, candidate_id: str, stress: bool = True, **extra: Any) -> dict:
    """The answer of a pending oracle job, as references its ingest job resolves."""
    out = job_.output
    answer = {
        "candidate_id": candidate_id,
        **extra,
        "job_uuid": job_.uuid,
        "energy": out.output.energy,
        "structure": out.structure,
        "forces": out.output.forces,
    }
    if stress:
        answer["stress"] = out.output.stress
    return answer


def stored_answer(candidate_id: str, job_uuid: str, output: dict, **extra: Any) -> dict:
    """The same answer read from a finished oracle job's stored task document."""
    return {
        "candidate_id": candidate_id,
        **extra,
        "job_uuid": job_uuid,
        "energy": output["output"].get("energy"),
        "structure": output.get("structure"),
        "forces": output["output"].get("forces"),
        "stress": output["output"].get("stress"),
    }
