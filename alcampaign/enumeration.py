"""Derivative (ordered) structures of a disordered parent, enumerated with icet.

The parent is read with pymatgen; its partially occupied sites define the sublattices
to order (a site whose occupancies sum below one also admits a vacancy, ``X``). The
parent is reduced to its primitive cell, and icet's ``enumerate_structures`` yields
every symmetry-distinct ordering in supercells of ``min_size`` to ``max_size``
primitive cells. Each ordering gets a stable id (:func:`candidate_id`).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from pymatgen.core import Element, Structure
from pymatgen.io.ase import AseAtomsAdaptor

VACANCY = "X"


class EnumerationError(ValueError):
    """The parent structure or the enumeration request cannot be used."""


@dataclass
class Parent:
    """A disordered parent reduced to its primitive cell.

    Attributes
    ----------
    structure
        The primitive parent (pymatgen, possibly disordered).
    atoms
        The same lattice as ASE atoms with a placeholder species on each site.
    chemical_symbols
        Allowed species of each site (``X`` is a vacancy); one list per site.
    source
        Where the parent came from (file name).
    """

    structure: Structure
    atoms: Atoms
    chemical_symbols: list[list[str]]
    source: str

    @property
    def sublattice_summary(self) -> str:
        """A human-readable description of the sites being ordered."""
        parts = sorted({"/".join(s) for s in self.chemical_symbols if len(s) > 1})
        return ", ".join(parts)


@dataclass
class Ordering:
    """One enumerated ordering.

    Attributes
    ----------
    atoms
        The ordering as ASE atoms on the ideal lattice (vacancies as ``X``).
    structure
        The same without vacancies, as a pymatgen structure.
    size
        Supercell size in primitive cells.
    """

    atoms: Atoms
    structure: Structure
    size: int


def _site_symbols(site) -> list[str]:
    occupancy = 0.0
    symbols = []
    for species, occ in site.species.items():
        symbol = getattr(species, "symbol", None) or getattr(species, "element", species).symbol
        if symbol not in symbols:
            symbols.append(symbol)
        occupancy += occ
    if occupancy > 1.0 + 1e-6:
        raise EnumerationError(
            f"site at {np.round(site.frac_coords, 4).tolist()} has occupancies summing to "
            f"{occupancy:.3f} > 1; fix the occupancies in the structure file"
        )
    if occupancy < 1.0 - 1e-6:
        symbols.append(VACANCY)
    return sorted(symbols)


def read_structure(path: str | Path) -> Structure:
    """Read a structure file with pymatgen.

    Raises
    ------
    EnumerationError
        The file is missing or does not parse (the message names it).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_file(path)
    except Exception as exc:  # pymatgen raises many kinds of errors on a bad file
        raise EnumerationError(f"could not read structure file {path}: {exc}") from None
    if len(structure) == 0:
        raise EnumerationError(f"structure file {path} holds no sites")
    return structure


def load_parent(path: str | Path, sublattices: dict[int, list[str]] | None = None) -> Parent:
    """Read a disordered parent structure file; see :func:`make_parent`."""
    return make_parent(read_structure(path), sublattices, Path(path).name)


def make_parent(
    structure: Structure, sublattices: dict[int, list[str]] | None = None, source: str = "parent"
) -> Parent:
    """Reduce a disordered parent to its primitive cell and find the sites to order.

    Parameters
    ----------
    structure
        The parent, with partial occupancies on the sites to order.
    sublattices
        Override the allowed species of sites of the primitive cell, by site index.
    source
        Where the parent came from (recorded as provenance).

    Raises
    ------
    EnumerationError
        An occupancy sum exceeds one, a symbol is not an element, or no site has more
        than one allowed species.
    """
    primitive = structure.get_primitive_structure()
    symbols = [_site_symbols(site) for site in primitive]
    for index, allowed in (sublattices or {}).items():
        if not 0 <= index < len(symbols):
            raise EnumerationError(
                f"system.sublattices: site {index} does not exist (primitive cell has "
                f"{len(symbols)} sites)"
            )
        for s in allowed:
            if s != VACANCY and not Element.is_valid_symbol(s):
                raise EnumerationError(f"system.sublattices: {s!r} is not an element symbol")
        symbols[index] = sorted(set(allowed))
    if not any(len(s) > 1 for s in symbols):
        raise EnumerationError(
            f"{source} has no disordered site: give a site partial occupancies (e.g. Li 0.5) "
            "or set system.sublattices in the config"
        )
    placeholder = [s[0] if s[0] != VACANCY else s[-1] for s in symbols]
    atoms = Atoms(
        symbols=placeholder,
        cell=primitive.lattice.matrix,
        scaled_positions=primitive.frac_coords,
        pbc=True,
    )
    return Parent(primitive, atoms, symbols, source)


def enumerate_orderings(
    parent: Parent, min_size: int, max_size: int, max_candidates: int | None = None
) -> list[Ordering]:
    """All symmetry-distinct orderings of ``parent`` in supercells of the given sizes.

    Raises
    ------
    EnumerationError
        The enumeration is empty or exceeds ``max_candidates``.
    """
    from icet.tools import enumerate_structures

    orderings = []
    for atoms in enumerate_structures(
        parent.atoms, range(min_size, max_size + 1), parent.chemical_symbols
    ):
        if max_candidates is not None and len(orderings) >= max_candidates:
            raise EnumerationError(
                f"enumeration yields more than enumeration.max_candidates={max_candidates} "
                "structures; lower enumeration.max_size or raise the cap"
            )
        kept = atoms[[s != VACANCY for s in atoms.get_chemical_symbols()]]
        if len(kept) == 0:
            continue  # an all-vacancy cell is not a structure
        size = round(len(atoms) / len(parent.atoms))
        orderings.append(Ordering(atoms, AseAtomsAdaptor.get_structure(kept), size))
    if not orderings:
        raise EnumerationError(
            f"enumeration of {parent.source} with sizes {min_size}..{max_size} is empty"
        )
    return orderings


def candidate_id(structure: Structure, decimals: int = 4) -> str:
    """A stable id for an ordered structure.

    The id hashes the Niggli-reduced lattice and the sorted, wrapped fractional
    coordinates of each species, so the same structure gives the same id in every
    run, on every machine.
    """
    reduced = structure.get_reduced_structure()
    lattice = np.round(np.concatenate([reduced.lattice.abc, reduced.lattice.angles]), 3)
    frac = np.round(np.mod(np.round(reduced.frac_coords, decimals), 1.0), decimals)
    rows = sorted(
        (site.species_string, *map(float, f)) for site, f in zip(reduced, frac, strict=True)
    )
    text = f"{reduced.composition.formula}|{lattice.tolist()}|{rows}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]
