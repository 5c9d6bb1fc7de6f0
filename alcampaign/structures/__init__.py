"""Structures: reading a disordered parent and enumerating its orderings (icet).

May import ``alcampaign.science`` and ``alcampaign.config``.
"""
