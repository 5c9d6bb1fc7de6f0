"""Build the flow of a campaign from a config file, for any jobflow manager.

Usage::

    python workflows/disordered_campaign.py examples/cuau_emt.yaml            # run locally
    python workflows/disordered_campaign.py examples/cuau_emt.yaml --dry-run  # list the jobs

The flow is an ordinary jobflow ``Flow``, made by
:class:`alcampaign.campaign.flows.ActiveLearningMaker`: instead of ``run_locally`` it
can be handed to FireWorks (``jobflow.managers.fireworks.flow_to_workflow``) or
jobflow-remote, or put inside a larger workflow; its jobs need a JobStore with the
campaign collections (see ``stores/``).
"""

from __future__ import annotations

import argparse

from jobflow import Flow

from alcampaign.campaign.flows import ActiveLearningMaker
from alcampaign.campaign.preflight import preflight
from alcampaign.config import load_config


def build(config_path: str, name: str | None = None) -> Flow:
    """Validate a config (writing nothing) and return its campaign flow.

    The oracle named in the config becomes the Maker's ``oracle_maker``; a workflow
    of your own would pass its own Maker instead.
    """
    config = load_config(config_path, name=name)
    parent = preflight(config)
    return ActiveLearningMaker(config=config).make(parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--name")
    parser.add_argument("--store", help="JobStore YAML (default: embedded)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    flow = build(args.config, args.name)
    if args.dry_run:
        for job in flow.jobs:
            print(job.name)
        return
    from jobflow import run_locally

    from alcampaign.store.facade import load_job_store

    run_locally(flow, store=load_job_store(args.store), log=False)


if __name__ == "__main__":
    main()
