"""The CHGNet prescreen: batched energies, forces, magmoms and embeddings.

``prescreen`` is the entry point; ``fast`` is the leaner CHGNet pass and
``fused_rows`` its C kernels (``kernels/gated_rows.c``, package data, built on first
use). May import ``alcampaign.science`` and ``alcampaign.config``.
"""
