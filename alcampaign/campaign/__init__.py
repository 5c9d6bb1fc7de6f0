"""Campaigns as jobflow jobs: documents, oracles, ingest, the controller, flows, managers.

``documents`` (the stored documents as pydantic models), ``context`` (a job's stores and
campaign document), ``oracle`` (Makers by import path, oracle jobs and their answers),
``ingest`` (register a campaign, store answers: shared by campaigns and MD),
``controller`` (read -> ``science.learning.decide`` -> documents -> write, under the
lease), ``jobs`` and ``otf_md`` (the jobflow jobs), ``flows`` (``ActiveLearningMaker``
and the campaign flows), ``external``, ``managers``, ``preflight``, ``status``.

Jobs reach the collections through ``alcampaign.store``; the controller's science is
``alcampaign.science.learning``. May import every layer below (science, config,
structures, chgnet, md, store); never report, serve or the CLI.
"""
