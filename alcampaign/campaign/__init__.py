"""Campaigns as jobflow jobs: documents, jobs, the controller, flows, managers.

Jobs reach the collections through ``alcampaign.store``; the controller's science is
``alcampaign.science.learning``. May import every layer below (science, config,
structures, chgnet, md, store); never report, serve or the CLI.
"""
