"""Science: pure numpy/scipy, no database, workflow or file I/O.

Surrogates (``surrogate``), acquisition rules (``acquisition``), validation and
stopping rules (``stopping``), the domain of applicability (``domain``), featurizers
(``features``: icet, ase, dscribe arrays) and one controller step on arrays
(``learning``). Imports nothing else from alcampaign.
"""
