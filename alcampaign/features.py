"""Featurizers that turn a candidate into the basis functions of the surrogate.

:class:`ClusterVectorFeaturizer` gives icet cluster vectors of the ideal (unrelaxed)
ordering: the surrogate on them is a Bayesian cluster expansion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms


@dataclass
class ClusterVectorFeaturizer:
    """icet cluster vectors on the parent lattice.

    Parameters
    ----------
    primitive
        The primitive parent as ASE atoms.
    chemical_symbols
        Allowed species of each primitive site (``X`` is a vacancy).
    cutoffs
        Cluster cutoffs in Angstrom: pairs, triplets, ...
    """

    primitive: Atoms
    chemical_symbols: list[list[str]]
    cutoffs: list[float]
    _space: object = field(default=None, init=False, repr=False)

    @property
    def cluster_space(self):
        """The icet ``ClusterSpace`` (built on first use)."""
        if self._space is None:
            from icet import ClusterSpace

            self._space = ClusterSpace(self.primitive, self.cutoffs, self.chemical_symbols)
        return self._space

    @property
    def n_features(self) -> int:
        """Length of a cluster vector (the zerolet included)."""
        return len(self.cluster_space)

    def featurize(self, orderings: Sequence[Atoms]) -> np.ndarray:
        """Cluster vectors of orderings on the parent lattice, shape ``(n, d)``."""
        space = self.cluster_space
        return np.array([space.get_cluster_vector(a) for a in orderings], dtype=float)

    def describe(self) -> dict:
        """What the features are, for the ``models`` store."""
        return {
            "kind": "cluster_vector",
            "cutoffs": list(self.cutoffs),
            "chemical_symbols": self.chemical_symbols,
            "n_features": self.n_features,
        }
