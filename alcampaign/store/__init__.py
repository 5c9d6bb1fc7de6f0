"""Stores: the one facade over the campaign collections (``facade``) and read-only
views for serving (``readonly``). May import ``science``, ``config`` and the
structure layers; nothing above.
"""
