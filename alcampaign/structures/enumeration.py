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
# Sites closer than this (Angstrom) in a structure file are a mistake (a duplicated atom,
# coordinates in the wrong unit), not a material.
MIN_DISTANCE = 0.5


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
    oxidation_states
        Oxidation state of each element when the parent gives them (e.g. ``Li+``).
    """

    structure: Structure
    atoms: Atoms
    chemical_symbols: list[list[str]]
    source: str
    oxidation_states: dict[str, float] | None = None


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
    backend
        The enumeration code that produced it.
    """

    atoms: Atoms
    structure: Structure
    size: int
    backend: str = "icet"


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
        problem = _cif_occupancy_problem(path) if path.suffix.lower() == ".cif" else None
        raise EnumerationError(problem or f"could not read structure file {path}: {exc}") from None
    if len(structure) == 0:
        raise EnumerationError(f"structure file {path} holds no sites")
    check_structure(structure, str(path))
    return structure


def check_structure(structure: Structure, source: str, min_distance: float = MIN_DISTANCE) -> None:
    """Refuse a structure with a species that is not an element or with two sites closer
    than ``min_distance`` Angstrom (periodic images included).

    Raises
    ------
    EnumerationError
        Naming the species, or the two sites and their distance.
    """
    for site in structure:
        for species in site.species:
            symbol = getattr(species, "symbol", str(species))
            if not Element.is_valid_symbol(symbol):
                raise EnumerationError(
                    f"{source}: {symbol!r} at {np.round(site.frac_coords, 4).tolist()} is not "
                    "an element symbol; fix _atom_site_type_symbol (or the POSCAR species line)"
                )
    if structure.volume < 1e-6:
        raise EnumerationError(f"{source}: the cell has no volume; check the lattice")
    if len(structure) > 1 or min(structure.lattice.abc) < min_distance:
        dist = structure.distance_matrix if len(structure) > 1 else np.zeros((1, 1))
        np.fill_diagonal(dist, np.inf)
        shortest = min(float(dist.min()), min(structure.lattice.abc))
        if shortest < min_distance:
            i, j = np.unravel_index(np.argmin(dist), dist.shape)
            raise EnumerationError(
                f"{source}: sites {i} and {j} are {shortest:.3f} A apart (less than "
                f"{min_distance} A): a duplicated atom or coordinates in the wrong unit?"
            )


def _cif_occupancy_problem(path: Path) -> str | None:
    """Name a site whose occupancies sum above one (pymatgen only says 'no structures')."""
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = CifParser(path).as_dict()
    except Exception:
        return None
    for block in blocks.values():
        try:
            xyz = zip(*(block[f"_atom_site_fract_{c}"] for c in "xyz"), strict=True)
            occ = [float(str(o).split("(")[0]) for o in block["_atom_site_occupancy"]]
        except (KeyError, ValueError):
            continue
        totals: dict[tuple, float] = {}
        for pos, o in zip(xyz, occ, strict=True):
            key = tuple(round(float(str(c).split("(")[0]), 4) for c in pos)
            totals[key] = totals.get(key, 0.0) + o
        for pos, total in totals.items():
            if total > 1.0 + 1e-3:
                return (
                    f"{path}: the site at {list(pos)} has occupancies summing to "
                    f"{total:.2f} > 1; fix _atom_site_occupancy"
                )
    return None


def load_parent(path: str | Path, sublattices: dict[int, list[str]] | None = None) -> Parent:
    """Read a disordered parent structure file; see :func:`make_parent`."""
    return make_parent(read_structure(path), sublattices, Path(path).name)


def make_parent(
    structure: Structure,
    sublattices: dict[int, list[str]] | None = None,
    source: str = "parent",
    symprec: float = 0.01,
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
    symprec
        Symmetry tolerance (Angstrom) of the primitive-cell search.

    Raises
    ------
    EnumerationError
        An occupancy sum exceeds one, a symbol is not an element, or no site has more
        than one allowed species.
    """
    primitive = primitive_cell(structure, symprec)
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
    return Parent(primitive, atoms, symbols, source, _oxidation_states(primitive))


def primitive_cell(structure: Structure, symprec: float = 0.01) -> Structure:
    """The primitive cell (pymatgen's SpacegroupAnalyzer; partial occupancies count as
    distinct species), falling back to ``get_primitive_structure`` if spglib fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        primitive = SpacegroupAnalyzer(structure, symprec=symprec).find_primitive()
    except Exception:  # spglib can fail on odd disordered inputs
        primitive = None
    return primitive if primitive is not None else structure.get_primitive_structure()


def _oxidation_states(structure: Structure) -> dict[str, float] | None:
    states: dict[str, set[float]] = {}
    for site in structure:
        for species in site.species:
            oxi = getattr(species, "oxi_state", None)
            if oxi is None:
                return None
            states.setdefault(species.symbol, set()).add(float(oxi))
    if any(len(v) > 1 for v in states.values()):
        return None  # mixed valence: no single charge per element
    return {el: v.pop() for el, v in states.items()}


def apply_occupancies(structure: Structure, occupancies: dict[str, dict[str, float]]) -> Structure:
    """Override the occupancy of every site holding an element.

    Parameters
    ----------
    structure
        The parent.
    occupancies
        ``{element: {species: occupancy}}``, e.g. ``{"Li": {"Li+": 0.5}}`` puts half a
        Li+ (and half a vacancy) on every site that held Li.

    Raises
    ------
    EnumerationError
        An element is absent, a species is unknown, or occupancies sum above one.
    """
    from pymatgen.core import Composition

    out = structure.copy()
    for element, species in occupancies.items():
        sites = [
            i for i, site in enumerate(out) if element in {e.symbol for e in site.species.elements}
        ]
        if not sites:
            raise EnumerationError(f"system.occupancies: no site holds {element}")
        total = sum(species.values())
        if total > 1.0 + 1e-6 or any(v <= 0 for v in species.values()):
            raise EnumerationError(
                f"system.occupancies: {element} -> {species} must be positive and sum to <= 1"
            )
        try:
            comp = Composition(species)
        except Exception as exc:
            raise EnumerationError(f"system.occupancies: {species}: {exc}") from None
        for i in sites:
            out.replace(i, comp, coords=out[i].frac_coords)
    return out


def enumerate_orderings(
    parent: Parent,
    min_size: int,
    max_size: int,
    max_candidates: int | None = None,
    *,
    concentrations: dict[str, float] | None = None,
    tolerance: float = 1e-6,
    charge_balanced: bool = False,
    keep: int | None = None,
    backend: str = "icet",
) -> list[Ordering]:
    """Symmetry-distinct orderings of ``parent`` in supercells of the given sizes.

    Parameters
    ----------
    parent
        The primitive parent.
    min_size, max_size
        Supercell sizes, in primitive cells.
    max_candidates
        Refuse (raise) if more orderings than this pass the filters.
    concentrations
        Keep orderings whose fraction of each given element on the sites that may hold
        it is within ``tolerance`` of the target, e.g. ``{"Li": 0.5}``.
    tolerance
        Absolute tolerance of the concentration filter.
    charge_balanced
        Keep only charge-neutral orderings (needs oxidation states in the parent).
    keep
        Keep at most this many, chosen deterministically: smallest supercells first,
        then by candidate id (:func:`candidate_id`).
    backend
        ``icet`` (default) or ``enumlib`` (pymatgen's EnumerateStructureTransformation,
        needs ``enum.x`` on PATH).

    Raises
    ------
    EnumerationError
        The request cannot be met, the result is empty, or it exceeds ``max_candidates``.
    """
    if charge_balanced and not parent.oxidation_states:
        raise EnumerationError(
            "enumeration.charge_balanced needs one oxidation state per element in the "
            "structure file (e.g. Li+, Co3+, O2-)"
        )
    allowed = {el for s in parent.chemical_symbols for el in s}
    for element in concentrations or {}:
        if element not in allowed:
            raise EnumerationError(f"enumeration.concentrations: {element} is on no site")
    if max_candidates is not None:
        bound = estimate_count(parent, min_size, max_size)
        if bound > max_candidates:
            raise EnumerationError(
                f"sizes {min_size}..{max_size} of {parent.source} give at least ~{bound:.3g} "
                f"orderings before filters, more than enumeration.max_candidates="
                f"{max_candidates}: lower enumeration.max_size, or raise "
                "enumeration.max_candidates explicitly"
            )
    if backend == "enumlib":
        raw = _enumlib_orderings(parent, min_size, max_size)
    elif backend == "icet":
        raw = _icet_orderings(parent, min_size, max_size)
    else:
        raise EnumerationError(f"enumeration.backend: unknown backend {backend!r}")
    orderings = []
    for ordering in raw:
        if concentrations and not _concentrations_match(
            ordering.atoms, parent, concentrations, tolerance
        ):
            continue
        if charge_balanced and abs(_charge(ordering.atoms, parent.oxidation_states)) > 1e-6:
            continue
        orderings.append(ordering)
        if max_candidates is not None and len(orderings) > max_candidates:
            raise EnumerationError(
                f"enumeration yields more than enumeration.max_candidates={max_candidates} "
                "structures; lower enumeration.max_size, add filters, set enumeration.keep, "
                "or raise the cap"
            )
    if not orderings:
        raise EnumerationError(
            f"enumeration of {parent.source} with sizes {min_size}..{max_size} is empty"
            + (
                " after the concentration/charge filters"
                if concentrations or charge_balanced
                else ""
            )
        )
    if keep is not None and len(orderings) > keep:
        orderings = sorted(orderings, key=lambda o: (o.size, candidate_id(o.structure)))[:keep]
    return orderings


def hnf_count(n: int) -> int:
    """Number of distinct supercells of index ``n`` of a 3D lattice: Hermite normal
    forms with diagonal ``(a, c, f)``, ``a c f = n``, each with ``c f**2`` choices of
    the off-diagonal entries (Hart & Forcade, Phys. Rev. B 77, 224115 (2008), eq. 2)."""
    total = 0
    for a in range(1, n + 1):
        if n % a:
            continue
        for c in range(1, n // a + 1):
            if (n // a) % c == 0:
                f = n // a // c
                total += c * f * f
    return total


def point_group_order(parent: Parent) -> int:
    """Rotations of the parent's lattice that map each sublattice onto itself (spglib)."""
    import spglib

    kinds: dict[tuple[str, ...], int] = {}
    numbers = [kinds.setdefault(tuple(s), len(kinds) + 1) for s in parent.chemical_symbols]
    cell = (parent.atoms.cell.array, parent.atoms.get_scaled_positions(), numbers)
    symmetry = spglib.get_symmetry(cell, symprec=1e-3)
    if symmetry is None:
        return 1
    return max(1, len({r.tobytes() for r in symmetry["rotations"]}))


def estimate_count(parent: Parent, min_size: int, max_size: int) -> float:
    """A fast estimate of the number of orderings in supercells of the given sizes,
    before any filter, without enumerating.

    Burnside's lemma: the labelings of the supercells of index ``n`` fall into orbits
    of at most ``|G| n`` members (``G`` the parent's point group, ``n`` translations),
    so there are at least ``hnf_count(n) * prod(k_s)**n / (|G| n)`` orbits, ``k_s`` the
    species allowed on primitive site ``s``. A lower bound (up to the few
    superperiodic cells icet drops): fcc Cu-Au to 8 atoms, 153 for 631 enumerated.
    """
    g = point_group_order(parent)
    k = float(np.prod([len(s) for s in parent.chemical_symbols]))
    total = 0.0
    for n in range(min_size, max_size + 1):
        total += hnf_count(n) * k**n / (g * n)
        if not np.isfinite(total):
            return float("inf")
    return total


def _icet_orderings(parent: Parent, min_size: int, max_size: int):
    from icet.tools import enumerate_structures

    for atoms in enumerate_structures(
        parent.atoms, range(min_size, max_size + 1), parent.chemical_symbols
    ):
        kept = atoms[[s != VACANCY for s in atoms.get_chemical_symbols()]]
        if len(kept) == 0:
            continue  # an all-vacancy cell is not a structure
        size = round(len(atoms) / len(parent.atoms))
        yield Ordering(atoms, AseAtomsAdaptor.get_structure(kept), size, "icet")


def _enumlib_orderings(parent: Parent, min_size: int, max_size: int):
    """Orderings from enumlib through pymatgen (needs ``enum.x`` on PATH)."""
    import shutil

    from pymatgen.transformations.advanced_transformations import (
        EnumerateStructureTransformation,
    )

    if shutil.which("enum.x") is None:
        raise EnumerationError("enumeration.backend enumlib needs enum.x on PATH; use icet")
    if any(VACANCY in s for s in parent.chemical_symbols):
        raise EnumerationError(
            "the enumlib backend does not keep vacancy sites, which the cluster-vector "
            "features need; use enumeration.backend icet for Li/vacancy sublattices"
        )
    trans = EnumerateStructureTransformation(min_cell_size=min_size, max_cell_size=max_size)
    for entry in trans.apply_transformation(parent.structure, return_ranked_list=10**7):
        structure = entry["structure"]
        atoms = AseAtomsAdaptor.get_atoms(structure)
        yield Ordering(atoms, structure, round(len(structure) / len(parent.structure)), "enumlib")


def _sublattice_sites(atoms: Atoms, parent: Parent) -> np.ndarray:
    """Index of the primitive-cell site each atom of an ordering sits on."""
    frac = atoms.positions @ np.linalg.inv(parent.atoms.cell.array)
    ref = parent.atoms.get_scaled_positions(wrap=True)
    delta = frac[:, None, :] - ref[None, :, :]
    delta -= np.round(delta)
    return np.argmin(np.linalg.norm(delta @ parent.atoms.cell.array, axis=2), axis=1)


def _concentrations_match(
    atoms: Atoms, parent: Parent, targets: dict[str, float], tolerance: float
) -> bool:
    symbols = np.array(atoms.get_chemical_symbols())
    allowed = [parent.chemical_symbols[i] for i in _sublattice_sites(atoms, parent)]
    for element, target in targets.items():
        hosts = np.array([element in a for a in allowed])
        fraction = float(np.mean(symbols[hosts] == element))
        if abs(fraction - target) > tolerance:
            return False
    return True


def _charge(atoms: Atoms, oxidation_states: dict[str, float]) -> float:
    return float(
        sum(oxidation_states.get(s, 0.0) for s in atoms.get_chemical_symbols() if s != VACANCY)
    )


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


def resolve_backend(name: str, parent: Parent) -> str:
    """``auto`` means enumlib when ``enum.x`` is on PATH and no sublattice has vacancies."""
    import shutil

    if name != "auto":
        return name
    vacancies = any(VACANCY in s for s in parent.chemical_symbols)
    return "enumlib" if shutil.which("enum.x") and not vacancies else "icet"


def orderings_from_config(config, structure: Structure) -> tuple[Parent, list[Ordering]]:
    """Parent and orderings as a campaign config asks (occupancies, sizes, filters, cap).

    Parameters
    ----------
    config
        A :class:`alcampaign.config.CampaignConfig`.
    structure
        The parent as read from the structure file.
    """
    system, e = config.system, config.enumeration
    if system.occupancies:
        structure = apply_occupancies(structure, system.occupancies)
    parent = make_parent(structure, system.sublattices, system.structure.name, system.symprec)
    orderings = enumerate_orderings(
        parent,
        e.min_size,
        e.max_size,
        e.max_candidates,
        concentrations=e.concentrations,
        tolerance=e.tolerance,
        charge_balanced=e.charge_balanced,
        keep=e.keep,
        backend=resolve_backend(e.backend, parent),
    )
    return parent, orderings
