"""Molecular dynamics: the integrator with its triggers (``dynamics``), the linear
potential with Bayesian uncertainty (``potential``) and the MD campaign config
(``config``). No database or workflow code: the MD jobs live in
``alcampaign.campaign.otf_md``. May import ``science`` and ``config``.
"""
