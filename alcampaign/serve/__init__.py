"""Serving: the read-only HTTP API (``api``), the dashboard and its table cache.

May import every layer below, report included; never the CLI.
"""
