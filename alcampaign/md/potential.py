"""A linear interatomic potential that knows its own uncertainty (numpy/scipy, ase, dscribe).

The energy is a sum over atoms of a weight vector times a descriptor of each atom's
environment::

    E = sum_i w . q_i,        F_j = -dE/dr_j = -w . sum_i dq_i/dr_j

``q_i`` concatenates

* radial pair functions with a smooth cosine cutoff (:class:`RadialPairFeaturizer`,
  analytic gradients, one species count per atom as the one-body term), and
* a SOAP power spectrum (dscribe, GTO radial basis) with **analytic** derivatives.

dscribe computes analytic SOAP derivatives only for non-periodic systems (its
``validate_derivatives_method`` refuses periodic ones, and its numerical derivatives
of a periodic system keep the centres fixed, which is not the force we need). For a
periodic cell :class:`SoapDescriptor` therefore builds the finite cluster of every
periodic image within ``r_cut`` plus dscribe's Gaussian padding of an atom of the
cell, computes the descriptors of the cell's atoms in that cluster with centres
attached to their atoms (``attach=True``), and folds the derivative with respect to
each image back onto its atom (an image moves with its atom at fixed cell). The
descriptors equal dscribe's periodic ones to round-off, and the gradients equal finite
differences of the energy (tests/test_potential.py).

The weights come from :class:`~alcampaign.science.surrogate.BayesianLinearRegression` fitted
to one energy row per atom (``sum_i q_i / n``, target ``E / n``) and ``3 n`` force rows
(``-sum_i dq_i/dr_j``) per labelled frame, so every prediction carries its epistemic
variance ``x^T A^-1 x``.
Extrapolation is judged per atom on the environment descriptors ``q_i``
(:func:`fit_environment_domain`: Mahalanobis distance and leverage against the
training environments). :class:`UncertainPotentialCalculator` wraps it all as an ASE
calculator whose ``results`` also hold the uncertainties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from alcampaign.science.domain import ApplicabilityDomain
from alcampaign.science.features import RadialPairFeaturizer
from alcampaign.science.surrogate import ENERGY, FORCE, BayesianLinearRegression


@dataclass
class Cluster:
    """The atoms of a cell plus every periodic image within ``cutoff`` of one of them.

    A dense numpy search (O(n^2) per image shift; fast for the few hundred atoms of an
    on-the-fly MD cell, and several times faster there than ASE's neighbour list).

    Attributes
    ----------
    atoms
        Non-periodic atoms: the cell's atoms first (wrapped into the cell), then images.
    owner
        For each cluster atom, the index of the cell atom it is an image of.
    distances, vectors
        From each cell atom (rows) to each cluster atom (columns).
    """

    atoms: Atoms
    owner: np.ndarray
    distances: np.ndarray
    vectors: np.ndarray

    @classmethod
    def build(cls, atoms: Atoms, cutoff: float) -> Cluster:
        """The cluster of ``atoms`` within ``cutoff`` (periodic along its ``pbc`` axes)."""
        n = len(atoms)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        pos = atoms.get_positions(wrap=True) if pbc.any() else atoms.get_positions()
        if pbc.any():
            # Shifts needed along each axis: the cutoff over the spacing of lattice planes.
            recip = np.linalg.inv(atoms.cell.complete()).T
            reach = np.where(pbc, np.ceil(cutoff * np.linalg.norm(recip, axis=1)), 0).astype(int)
            ranges = [np.arange(-r, r + 1) for r in reach]
            shifts = np.array(np.meshgrid(*ranges, indexing="ij")).reshape(3, -1).T
            shifts = shifts[np.any(shifts != 0, axis=1)]
            images = (pos[None, :, :] + (shifts @ atoms.cell.array)[:, None, :]).reshape(-1, 3)
            owner_img = np.tile(np.arange(n), len(shifts))
            dist = np.linalg.norm(images[None, :, :] - pos[:, None, :], axis=2)
            near = dist.min(axis=0) < cutoff
            all_pos = np.vstack([pos, images[near]])
            owner = np.r_[np.arange(n), owner_img[near]]
        else:
            all_pos, owner = pos, np.arange(n)
        vectors = all_pos[None, :, :] - pos[:, None, :]
        distances = np.linalg.norm(vectors, axis=2)
        return cls(Atoms(atoms.numbers[owner], all_pos), owner, distances, vectors)

    def pairs(self, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(i, j, d, D)`` of every pair within ``cutoff`` as ASE's ``neighbor_list("ijdD")``
        gives them (``j`` a cell atom, ``D = r_j + shift - r_i``)."""
        i, k = np.nonzero((self.distances < cutoff) & (self.distances > 0))
        return i, self.owner[k], self.distances[i, k], self.vectors[i, k]


@dataclass
class SoapDescriptor:
    """Per-atom SOAP power spectrum with analytic derivatives, periodic or not.

    Parameters
    ----------
    species
        Element symbols.
    r_cut
        Cutoff radius (Angstrom).
    n_max, l_max
        Radial and angular resolution (GTO radial basis).
    sigma
        Width of the atomic Gaussians (Angstrom).
    """

    species: list[str]
    r_cut: float = 4.5
    n_max: int = 4
    l_max: int = 3
    sigma: float = 0.5
    _soap: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.species = sorted(self.species)

    @property
    def soap(self):
        """The (non-periodic) dscribe SOAP object, built on first use."""
        if self._soap is None:
            from dscribe.descriptors import SOAP

            self._soap = SOAP(
                species=self.species,
                r_cut=self.r_cut,
                n_max=self.n_max,
                l_max=self.l_max,
                sigma=self.sigma,
                rbf="gto",
                periodic=False,
            )
        return self._soap

    @property
    def n_features(self) -> int:
        """Length of one atom's descriptor."""
        return int(self.soap.get_number_of_features())

    def _check_species(self, atoms: Atoms) -> None:
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(self.species))
        if unknown:
            raise ValueError(
                f"element(s) {', '.join(unknown)} not in the descriptor's species {self.species}"
            )

    @property
    def reach(self) -> float:
        """Distance within which an atom affects a descriptor: ``r_cut`` plus dscribe's
        padding for the Gaussian tails."""
        return self.r_cut + float(self.soap.get_cutoff_padding())

    def _cluster(self, atoms: Atoms, cluster: Cluster | None = None) -> Cluster:
        self._check_species(atoms)
        return cluster if cluster is not None else Cluster.build(atoms, self.reach)

    def atom_features(self, atoms: Atoms, cluster: Cluster | None = None) -> np.ndarray:
        """Descriptor of each atom's environment, shape ``(n_atoms, n_features)``.

        ``cluster``: a :class:`Cluster` of ``atoms`` with a cutoff of at least :attr:`reach`.
        """
        c = self._cluster(atoms, cluster)
        return self.soap.create(c.atoms, centers=list(range(len(atoms))))

    def features_and_gradients(
        self, atoms: Atoms, cluster: Cluster | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom descriptors ``q_i`` and ``d(sum_i q_i)/dr_j``.

        Returns
        -------
        q, grad
            Shapes ``(n_atoms, n_features)`` and ``(n_atoms, 3, n_features)``.
        """
        n = len(atoms)
        c = self._cluster(atoms, cluster)
        d, q = self.soap.derivatives(
            c.atoms, centers=list(range(n)), attach=True, method="analytical"
        )
        per_cluster_atom = d.sum(axis=0)  # (n_cluster, 3, n_features): sum over centres
        grad = np.zeros((n, 3, per_cluster_atom.shape[-1]))
        np.add.at(grad, c.owner, per_cluster_atom)
        return q, grad

    def describe(self) -> dict:
        """Settings, for the ``models`` store."""
        return {
            "kind": "soap",
            "species": self.species,
            "r_cut": self.r_cut,
            "n_max": self.n_max,
            "l_max": self.l_max,
            "sigma": self.sigma,
            "rbf": "gto",
            "derivatives": "analytical (periodic images folded back)",
            "n_features": self.n_features,
        }


@dataclass
class EnvironmentDescriptor:
    """Pair functions and (optionally) SOAP of each atom, side by side."""

    pair: RadialPairFeaturizer
    soap: SoapDescriptor | None = None

    @property
    def n_features(self) -> int:
        """Columns of one atom's descriptor."""
        return self.pair.n_features + (self.soap.n_features if self.soap else 0)

    def _cluster(self, atoms: Atoms) -> Cluster:
        """One neighbour search serves both descriptors."""
        cutoff = max(self.pair.r_cut, self.soap.reach if self.soap else 0.0)
        return Cluster.build(atoms, cutoff)

    def atom_features(self, atoms: Atoms) -> np.ndarray:
        """``q_i`` of every atom, shape ``(n_atoms, n_features)``."""
        c = self._cluster(atoms)
        blocks = [self.pair.atom_features(atoms, c.pairs(self.pair.r_cut))]
        if self.soap is not None:
            blocks.append(self.soap.atom_features(atoms, c))
        return np.hstack(blocks)

    def features_and_gradients(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        """``q_i`` per atom and ``d(sum_i q_i)/dr_j``, shapes ``(n, d)`` and ``(n, 3, d)``."""
        c = self._cluster(atoms)
        pairs = c.pairs(self.pair.r_cut)
        q = [self.pair.atom_features(atoms, pairs)]
        g = [self.pair.gradients(atoms, pairs)]
        if self.soap is not None:
            qs, gs = self.soap.features_and_gradients(atoms, c)
            q.append(qs)
            g.append(gs)
        return np.hstack(q), np.concatenate(g, axis=2)

    def to_dict(self) -> dict:
        """Settings that rebuild this descriptor (:meth:`from_dict`)."""
        pair = {
            "species": self.pair.species,
            "r_cut": self.pair.r_cut,
            "n_radial": self.pair.n_radial,
            "r_min": self.pair.r_min,
        }
        soap = None
        if self.soap is not None:
            soap = {k: getattr(self.soap, k) for k in ("species", "r_cut", "n_max", "l_max")}
            soap["sigma"] = self.soap.sigma
        return {"pair": pair, "soap": soap}

    @classmethod
    def from_dict(cls, d: dict) -> EnvironmentDescriptor:
        """The descriptor of a :meth:`to_dict` dict."""
        soap = SoapDescriptor(**d["soap"]) if d.get("soap") else None
        return cls(RadialPairFeaturizer(**d["pair"]), soap)


@dataclass
class Frame:
    """One labelled configuration: atoms, total energy (eV), forces (eV/A)."""

    atoms: Atoms
    energy: float
    forces: np.ndarray


@dataclass
class PotentialResult:
    """What the potential says about one configuration.

    Attributes
    ----------
    energy, energy_std
        Total energy and its epistemic standard deviation (eV).
    forces, forces_std
        Forces and the epistemic standard deviation of each component (eV/A), ``(n, 3)``.
    environments
        The per-atom descriptors ``q_i`` (unscaled), ``(n, d)``.
    mahalanobis, leverage
        Per-atom extrapolation measures (``None`` without a domain).
    """

    energy: float
    energy_std: float
    forces: np.ndarray
    forces_std: np.ndarray
    environments: np.ndarray
    mahalanobis: np.ndarray | None = None
    leverage: np.ndarray | None = None

    @property
    def max_force_std(self) -> float:
        """Largest epistemic standard deviation of a force component (eV/A)."""
        return float(self.forces_std.max())


@dataclass
class EnvironmentDomain:
    """Per-atom domain of applicability over standardised environment descriptors.

    Columns are scaled by their training spread (constant columns are dropped), the
    covariance and Gram matrices get a small ridge so that unexplored directions count
    as far, and the flag limits are ``factor`` times the largest value over the
    training environments themselves: an atom is outside when it is further out than
    any environment the model was trained on, by that margin.
    """

    mahalanobis_factor: float | None = 1.5
    leverage_factor: float | None = 1.5
    ridge: float = 1e-3

    def fit(self, environments: np.ndarray) -> EnvironmentDomain:
        """Learn from the training environments, shape ``(n_atoms_total, d)``."""
        E = np.asarray(environments, dtype=float)
        std = E.std(axis=0)
        self.columns_ = np.flatnonzero(std > 1e-9 * max(std.max(), 1e-300))
        self.scale_ = std[self.columns_]
        Z = self._z(E)
        self.domain_ = ApplicabilityDomain(
            mahalanobis_threshold=np.inf, leverage_threshold=np.inf, ridge=self.ridge
        ).fit(Z)
        self.train_max_mahalanobis_ = float(self.domain_.mahalanobis(Z).max())
        self.train_max_leverage_ = float(self.domain_.leverage(Z).max())
        self.mahalanobis_limit_ = (
            None
            if self.mahalanobis_factor is None
            else self.mahalanobis_factor * self.train_max_mahalanobis_
        )
        self.leverage_limit_ = (
            None
            if self.leverage_factor is None
            else self.leverage_factor * self.train_max_leverage_
        )
        return self

    def _z(self, E: np.ndarray) -> np.ndarray:
        return np.asarray(E, dtype=float)[:, self.columns_] / self.scale_

    def assess(self, environments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom Mahalanobis distance and leverage."""
        Z = self._z(environments)
        return self.domain_.mahalanobis(Z), self.domain_.leverage(Z)

    def limits(self) -> dict:
        """The flag limits and the training maxima they derive from."""
        return {
            "mahalanobis": self.mahalanobis_limit_,
            "leverage": self.leverage_limit_,
            "train_max_mahalanobis": self.train_max_mahalanobis_,
            "train_max_leverage": self.train_max_leverage_,
        }


@dataclass
class LinearPotential:
    """``E = sum_i w . q_i`` with a Bayesian posterior over ``w``.

    Columns are divided by a fixed scale (the spread of each descriptor column over the
    first training set's atoms) so that the isotropic prior of the Bayesian model
    treats them alike; the scale is kept for the model's lifetime because its
    sufficient statistics depend on it.

    Parameters
    ----------
    descriptor
        The per-atom environment descriptor.
    model
        The Bayesian linear model (``center=False``: the one-body column carries the
        energy zero, so the energy stays extensive).
    """

    descriptor: EnvironmentDescriptor
    model: BayesianLinearRegression = field(
        default_factory=lambda: BayesianLinearRegression(center=False)
    )
    scale_: np.ndarray | None = None
    domain: EnvironmentDomain | None = None

    def design(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energy row per atom ``(d,)``, force rows ``(3 n, d)`` (scaled) and environments.

        The energy row is ``sum_i q_i / n`` with target ``E / n``: one noise level for
        the energy per atom fits frames of any size (a total-energy row with one noise
        level would trust a 2-atom frame's energy as much as a 200-atom one's).
        """
        q, grad = self.descriptor.features_and_gradients(atoms)
        scale = self.scale_ if self.scale_ is not None else np.ones(q.shape[1])
        energy_row = q.sum(axis=0) / scale / len(atoms)
        force_rows = -grad.reshape(-1, q.shape[1]) / scale
        return energy_row, force_rows, q

    def _rows(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        X, y, kind, envs = [], [], [], []
        for f in frames:
            e_row, f_rows, q = self.design(f.atoms)
            forces = np.asarray(f.forces, dtype=float).reshape(-1)
            if forces.size != f_rows.shape[0]:
                raise ValueError(f"frame has {len(f.atoms)} atoms but {forces.size // 3} forces")
            X += [e_row[None, :], f_rows]
            y += [[float(f.energy) / len(f.atoms)], forces]
            kind += [[ENERGY], np.full(forces.size, FORCE)]
            envs.append(q)
        return np.vstack(X), np.concatenate(y), np.concatenate(kind).astype(int), envs

    def fit(self, frames: Sequence[Frame]) -> LinearPotential:
        """Fit scale, posterior and hyperparameters (evidence) to labelled frames."""
        if not frames:
            raise ValueError("cannot fit a potential to zero frames")
        q = np.vstack([self.descriptor.atom_features(f.atoms) for f in frames])
        std = q.std(axis=0)
        self.scale_ = np.where(std > 1e-8 * max(std.max(), 1e-300), std, 1.0)
        X, y, kind, _ = self._rows(frames)
        self.model.fit(X, y, kind)
        return self

    def update(self, frames: Sequence[Frame], optimize: bool = True) -> LinearPotential:
        """Add labelled frames (rank-one updates), then re-maximise the evidence."""
        if self.scale_ is None:
            return self.fit(frames)
        if frames:
            X, y, kind, _ = self._rows(frames)
            self.model.update(X, y, kind)
            if optimize:
                self.model.optimize_hyperparameters()
        return self

    def set_domain(self, environments: np.ndarray, domain: EnvironmentDomain) -> None:
        """Fit the per-atom domain on the training environments and attach it."""
        self.domain = domain.fit(environments)

    def evaluate(self, atoms: Atoms) -> PotentialResult:
        """Energy, forces, their epistemic uncertainty and the extrapolation measures."""
        e_row, f_rows, q = self.design(atoms)
        pe = self.model.predict(e_row[None, :], kind=ENERGY)
        pf = self.model.predict(f_rows, kind=FORCE)
        m = h = None
        if self.domain is not None:
            m, h = self.domain.assess(q)
        n = len(atoms)
        return PotentialResult(
            energy=float(pe.mean[0]) * n,
            energy_std=float(np.sqrt(pe.epistemic_var[0])) * n,
            forces=pf.mean.reshape(-1, 3),
            forces_std=np.sqrt(pf.epistemic_var).reshape(-1, 3),
            environments=q,
            mahalanobis=m,
            leverage=h,
        )

    def get_state(self) -> dict:
        """Descriptor settings, scale and model state as plain lists (``models`` store)."""
        return {
            "descriptor": self.descriptor.to_dict(),
            "scale": None if self.scale_ is None else self.scale_.tolist(),
            "energy_rows": "per_atom",
            "model": self.model.get_state(),
        }

    @classmethod
    def from_state(cls, state: dict) -> LinearPotential:
        """The potential of a :meth:`get_state` dict (without a domain)."""
        if state.get("energy_rows") != "per_atom":
            raise ValueError(
                "this potential state has total-energy rows (an older alcampaign): "
                "refit the potential from its labelled frames"
            )
        return cls(
            EnvironmentDescriptor.from_dict(state["descriptor"]),
            BayesianLinearRegression.from_state(state["model"]),
            np.asarray(state["scale"], dtype=float),
        )


class UncertainPotentialCalculator(Calculator):
    """ASE calculator of a :class:`LinearPotential`.

    ``results`` hold ``energy``, ``free_energy``, ``forces`` and also ``energy_std``
    (eV), ``forces_std`` (per component, eV/A), ``max_force_std``, and, when the
    potential has a domain, the per-atom ``mahalanobis`` and ``leverage`` with their
    maxima ``max_mahalanobis`` and ``max_leverage``.
    """

    implemented_properties = ("energy", "free_energy", "forces")

    def __init__(self, potential: LinearPotential, **kwargs) -> None:
        super().__init__(**kwargs)
        self.potential = potential

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        r = self.potential.evaluate(self.atoms)
        self.results = {
            "energy": r.energy,
            "free_energy": r.energy,
            "forces": r.forces,
            "energy_std": r.energy_std,
            "forces_std": r.forces_std,
            "max_force_std": r.max_force_std,
        }
        if r.mahalanobis is not None:
            self.results.update(
                mahalanobis=r.mahalanobis,
                leverage=r.leverage,
                max_mahalanobis=float(r.mahalanobis.max()),
                max_leverage=float(r.leverage.max()),
            )
