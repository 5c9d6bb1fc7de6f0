"""alcampaign: database-centric active-learning campaigns for materials.

Science modules (``surrogate``, ``acquisition``, ``stopping``) are pure numpy/scipy;
``stores``, ``jobs``, ``flows`` and ``cli`` hold the jobflow and maggma parts.
"""

__version__ = "0.1.0"
