"""Campaign flows: one jobflow ``Flow`` describes a whole campaign.

The flow holds the fixed beginning (register, enumerate, prescreen, initial design);
the controller adds each further iteration with ``Response(addition=...)``, so any
jobflow manager (``run_locally``, FireWorks, jobflow-remote) can execute it.
:class:`ActiveLearningMaker` makes that flow the atomate2 way (a ``Maker`` with the
oracle's ``Maker`` as a field), so a campaign can sit inside a user's own workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobflow import Flow, Job, Maker
from pymatgen.core import Structure

from alcampaign.campaign.jobs import (
    enumerate_candidates,
    initial_design,
    prescreen_candidates,
    register_campaign,
)
from alcampaign.campaign.oracle import maker_settings
from alcampaign.config import CampaignConfig, ConfigError


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
    flow = ActiveLearningMaker(config=config).make(parent)
    flow.name = config.name
    return flow


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


@dataclass
class ActiveLearningMaker(Maker):
    """Make the flow of an active-learning campaign over the orderings of a structure.

    An atomate2-style Maker: the oracle is any jobflow ``Maker`` (an atomate2
    relaxation or static Maker), the optional cheap fidelity another one, and the rest
    of the campaign (enumeration, features, acquisition, stopping) is the
    ``config``. The makers are written into the config as import path and changed
    keyword arguments (:func:`~alcampaign.campaign.oracle.maker_settings`), so the
    campaign document holds everything a worker elsewhere needs.

    Parameters
    ----------
    name
        Name of the flows produced (the campaign itself is named by ``config.name``).
    oracle_maker
        The expensive oracle; ``None`` keeps ``config.oracle``.
    cheap_maker
        A cheap fidelity for ``acquisition.rule: cost_aware``; ``None`` keeps
        ``config.oracle.cheap``.
    config
        The campaign config (a :class:`~alcampaign.config.CampaignConfig` or its dict);
        ``system.structure`` is not read (the structure is the argument of
        :meth:`make`).

    Examples
    --------
    A campaign on the orderings of a relaxed structure, inside a larger workflow:

    >>> from atomate2.ase.jobs import EmtRelaxMaker
    >>> from jobflow import Flow
    >>> from pymatgen.core import Lattice, Structure
    >>> a = 3.85  # disordered fcc Cu-Au, one site half Cu, half Au
    >>> fcc = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    >>> parent = Structure(fcc, [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    >>> maker = ActiveLearningMaker(
    ...     oracle_maker=EmtRelaxMaker(relax_kwargs={"fmax": 0.02}),
    ...     config={
    ...         "name": "cuau-demo",
    ...         "system": {"structure": "cuau_fcc.cif"},
    ...         "enumeration": {"max_size": 4},
    ...         "stopping": {"max_oracle_calls": 10},
    ...     },
    ... )
    >>> flow = Flow([maker.make(parent)], name="my workflow")
    >>> [job.name for job in flow.jobs[0].jobs]  # doctest: +NORMALIZE_WHITESPACE
    ['register cuau-demo', 'enumerate cuau-demo', 'prescreen cuau-demo',
     'initial design cuau-demo']

    Run it with ``jobflow.run_locally(flow, store=store)`` on a JobStore with the
    campaign collections (``alcampaign.store.facade.load_job_store``).
    """

    name: str = "active learning"
    oracle_maker: Maker | None = None
    cheap_maker: Maker | None = None
    config: CampaignConfig | dict[str, Any] | None = None

    def campaign_config(self) -> CampaignConfig:
        """The config with the makers written into ``oracle``.

        Raises
        ------
        ConfigError
            No config, or one that does not validate.
        """
        if self.config is None:
            raise ConfigError("ActiveLearningMaker needs a config (at least name and system)")
        raw = (
            self.config.model_dump(mode="json")
            if isinstance(self.config, CampaignConfig)
            else dict(self.config)
        )
        oracle = dict(raw.get("oracle") or {})
        if self.oracle_maker is not None:
            oracle["maker"], oracle["kwargs"] = maker_settings(self.oracle_maker)
        if self.cheap_maker is not None:
            cheap = dict(oracle.get("cheap") or {})
            cheap["maker"], cheap["kwargs"] = maker_settings(self.cheap_maker)
            oracle["cheap"] = cheap
        raw["oracle"] = oracle
        return CampaignConfig.model_validate(raw)

    def make(self, structure: Structure) -> Flow:
        """The campaign's flow: register, enumerate, prescreen, initial design; the
        controller adds every later iteration as it runs.

        Parameters
        ----------
        structure
            The disordered parent structure (or an output reference to one).

        Returns
        -------
        Flow
            Named ``"<name> <campaign name>"``; its output is the initial design's.
        """
        config = self.campaign_config()
        if isinstance(structure, Structure):
            structure = structure.as_dict()
        register = register_campaign(config.model_dump(mode="json"), structure)
        register.name = f"register {config.name}"
        jobs = [register, *_pipeline(config.name, after=register.output)]
        return Flow(jobs, output=jobs[-1].output, name=f"{self.name} {config.name}")
