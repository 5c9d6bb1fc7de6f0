"""Campaign flows: one jobflow ``Flow`` describes a whole campaign.

The flow holds the fixed beginning (register, enumerate, prescreen, initial design);
the controller adds each further iteration with ``Response(addition=...)``, so any
jobflow manager (``run_locally``, FireWorks, jobflow-remote) can execute it.
"""

from __future__ import annotations

from jobflow import Flow, Job
from pymatgen.core import Structure

from alcampaign.campaign.jobs import (
    enumerate_candidates,
    initial_design,
    prescreen_candidates,
    register_campaign,
)
from alcampaign.config import CampaignConfig


def _pipeline(name: str, after=None) -> list[Job]:
    enum = enumerate_candidates(name, after=after)
    enum.name = f"enumerate {name}"
    pre = prescreen_candidates(name, after=enum.output)
    pre.name = f"prescreen {name}"
    init = initial_design(name, after=pre.output)
    init.name = f"initial design {name}"
    return [enum, pre, init]


def campaign_flow(config: CampaignConfig, parent: Structure) -> Flow:
    """The flow of a new campaign.

    Parameters
    ----------
    config
        The validated campaign config.
    parent
        The disordered parent structure (stored in the campaign document, so that a
        worker on another machine does not need the structure file).
    """
    register = register_campaign(config.model_dump(mode="json"), parent.as_dict())
    register.name = f"register {config.name}"
    return Flow([register, *_pipeline(config.name, after=register.output)], name=config.name)


def enumeration_flow(config: CampaignConfig, parent: Structure) -> Flow:
    """Register, enumerate and prescreen only (``alcampaign enumerate``)."""
    register = register_campaign(config.model_dump(mode="json"), parent.as_dict())
    register.name = f"register {config.name}"
    return Flow(
        [register, *_pipeline(config.name, after=register.output)[:2]],
        name=f"{config.name} (enumeration)",
    )


def resume_flow(name: str) -> Flow:
    """The flow that continues a stored campaign from wherever it stopped.

    Every job is idempotent: enumeration adds only missing candidates, the prescreen
    screens only unscreened ones, and the initial design hands over to the controller
    at the iteration after the last recorded decision, which first labels any
    acquisition that never got its answer.
    """
    return Flow(_pipeline(name), name=f"{name} (resumed)")
