"""Molecular dynamics: the integrator with its triggers (``dynamics``), the linear
potential with Bayesian uncertainty (``potential``), the MD campaign config
(``config``) and one on-the-fly MD segment on plain objects (``steps``). No database or
workflow code: the MD jobs live in ``alcampaign.campaign.otf_md``. May import
``science`` and ``config``.
"""
