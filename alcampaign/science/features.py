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

    def cluster_metadata(self) -> dict[str, list]:
        """Order and diameter of the cluster behind each cluster-vector element.

        From icet's orbit list: ``order`` (0 zerolet, 1 singlet, 2 pair, ...) and
        ``diameter``, the largest distance between the sites of the orbit's
        representative cluster (Angstrom; 0 below pairs), the length icet's cutoffs
        apply to. One entry per column of :meth:`featurize`.
        """
        space = self.cluster_space
        orbits = space.orbit_list.orbits
        order, diameter = [], []
        for row in space.as_list:
            order.append(int(row["order"]))
            k = int(row["orbit_index"])
            dist = orbits[k].distances if k >= 0 else []
            diameter.append(float(max(dist)) if len(dist) else 0.0)
        return {"order": order, "diameter": diameter}

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
            **self.cluster_metadata(),
        }


@dataclass
class RadialPairFeaturizer:
    """Smooth radial pair descriptors with analytic gradients.

    For each unordered species pair ``(a, b)`` and each radial basis function ``k``::

        q_abk = sum over pairs i<j of species (a, b) with r_ij < r_cut of
                exp(-(r_ij - mu_k)^2 / (2 s^2)) * f_c(r_ij)

    with the cosine cutoff ``f_c(r) = (cos(pi r / r_cut) + 1) / 2``, plus one count
    per species (a one-body term). The total energy ``E = w . q`` is then a pair
    potential; ``-dq/dr_i`` gives the force rows of the surrogate.

    Parameters
    ----------
    species
        Element symbols the featurizer knows.
    r_cut
        Cutoff radius (Angstrom).
    n_radial
        Gaussians per species pair, centres evenly spaced on ``[r_min, r_cut]``.
    r_min
        First centre.
    """

    species: list[str]
    r_cut: float = 5.0
    n_radial: int = 8
    r_min: float = 1.5

    def __post_init__(self) -> None:
        self.species = sorted(self.species)
        n = len(self.species)
        self._pairs = [(a, b) for a in range(n) for b in range(a, n)]
        self._pair_index = {p: i for i, p in enumerate(self._pairs)}
        self._centres = np.linspace(self.r_min, self.r_cut, self.n_radial)
        self._width = (self.r_cut - self.r_min) / max(self.n_radial - 1, 1)

    @property
    def n_features(self) -> int:
        """Species counts plus pair channels times radial functions."""
        return len(self.species) + len(self._pairs) * self.n_radial

    def _basis(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Radial functions and their derivatives at distances ``d``, shape (m, K)."""
        g = np.exp(-((d[:, None] - self._centres) ** 2) / (2 * self._width**2))
        dg = -g * (d[:, None] - self._centres) / self._width**2
        fc = 0.5 * (np.cos(np.pi * d / self.r_cut) + 1.0)
        dfc = -0.5 * np.pi / self.r_cut * np.sin(np.pi * d / self.r_cut)
        return g * fc[:, None], dg * fc[:, None] + g * dfc[:, None]

    def _neighbours(self, atoms: Atoms, neighbours: tuple | None = None):
        from ase.neighborlist import neighbor_list

        index = {s: k for k, s in enumerate(self.species)}
        try:
            z = np.array([index[s] for s in atoms.get_chemical_symbols()])
        except KeyError as exc:
            raise ValueError(
                f"element {exc.args[0]} is not in the featurizer's species {self.species}"
            ) from None
        if neighbours is None:
            i, j, d, D = neighbor_list("ijdD", atoms, self.r_cut)
        else:  # a list built with a longer cutoff: keep the pairs within ours
            i, j, d, D = neighbours
            near = d < self.r_cut
            i, j, d, D = i[near], j[near], d[near], D[near]
        pair = np.array(
            [self._pair_index[(min(a, b), max(a, b))] for a, b in zip(z[i], z[j], strict=True)],
            dtype=int,
        )
        return z, i, d, D, pair

    def features(self, atoms: Atoms) -> np.ndarray:
        """Descriptor vector of one structure (extensive: sums over atoms)."""
        z, _, d, _, pair = self._neighbours(atoms)
        q = np.zeros(self.n_features)
        q[: len(self.species)] = np.bincount(z, minlength=len(self.species))
        phi, _ = self._basis(d)
        pairs = np.zeros((len(self._pairs), self.n_radial))
        np.add.at(pairs, pair, 0.5 * phi)  # each pair appears as (i, j) and (j, i)
        q[len(self.species) :] = pairs.ravel()
        return q

    def atom_features(self, atoms: Atoms, neighbours: tuple | None = None) -> np.ndarray:
        """Per-atom descriptors, shape ``(n_atoms, n_features)``; they sum to :meth:`features`.

        Atom ``i`` gets a one for its species and half of each pair it is in.
        ``neighbours``: ASE ``neighbor_list("ijdD", ...)`` output with a cutoff of at least
        ``r_cut``, to share one neighbour search between descriptors.
        """
        z, i, d, _, pair = self._neighbours(atoms, neighbours)
        n_species = len(self.species)
        out = np.zeros((len(atoms), self.n_features))
        out[np.arange(len(atoms)), z] = 1.0
        phi, _ = self._basis(d)
        pairs = np.zeros((len(atoms), len(self._pairs), self.n_radial))
        np.add.at(pairs, (i, pair), 0.5 * phi)
        out[:, n_species:] = pairs.reshape(len(atoms), -1)
        return out

    def gradients(self, atoms: Atoms, neighbours: tuple | None = None) -> np.ndarray:
        """``dq/dr``: shape ``(n_atoms, 3, n_features)``; force rows are its negative.

        ``neighbours`` as in :meth:`atom_features`.
        """
        _, i, d, D, pair = self._neighbours(atoms, neighbours)
        _, dphi = self._basis(d)
        unit = D / d[:, None]  # D = r_j - r_i (with the periodic shift)
        grad = np.zeros((len(atoms), 3, len(self._pairs), self.n_radial))
        # d q / d r_i = -sum_j phi'(r_ij) (r_j - r_i) / r_ij
        contrib = -unit[:, :, None] * dphi[:, None, :]  # (m, 3, K)
        np.add.at(grad, (i, slice(None), pair), contrib)
        out = np.zeros((len(atoms), 3, self.n_features))
        out[:, :, len(self.species) :] = grad.reshape(len(atoms), 3, -1)
        return out

    def design_rows(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        """Energy row and force rows of one structure for the surrogate.

        Returns
        -------
        rows, kind
            ``1 + 3 n_atoms`` rows (the energy row, then ``-dq/dr`` per coordinate) and
            their kinds (0 energy, 1 force).
        """
        rows = np.vstack(
            [self.features(atoms)[None, :], -self.gradients(atoms).reshape(-1, self.n_features)]
        )
        kind = np.r_[0, np.ones(3 * len(atoms), dtype=int)]
        return rows, kind
