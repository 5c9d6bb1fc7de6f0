"""Preflight: everything that can be checked before a campaign writes anything."""

from __future__ import annotations

from pymatgen.core import Structure

from alcampaign.config import EXTERNAL, CampaignConfig, ConfigError
from alcampaign.structures.enumeration import orderings_from_config, read_structure


def preflight(config: CampaignConfig, check_oracles: bool = True):
    """Check everything that can be checked before anything is written.

    Parses the structure file, enumerates (with every filter and cap), imports the
    oracle Makers and checks that the oracles and CHGNet know every element. Returns
    the parent structure as read. Raises ConfigError or EnumerationError.
    """
    from alcampaign.campaign.jobs import check_oracle_elements, import_maker

    parent = read_structure(config.system.structure)
    _, orderings = orderings_from_config(config, parent)
    elements = sorted({el.symbol for o in orderings for el in o.structure.composition})
    fidelities = [config.oracle, *([config.oracle.cheap] if config.oracle.cheap else [])]
    for fid in fidelities if check_oracles else []:
        if fid.maker == EXTERNAL:
            continue
        check_oracle_elements(import_maker(fid.maker, fid.kwargs), elements)
    if config.prescreen.enabled:
        from alcampaign.chgnet.prescreen import check_elements, load_chgnet

        try:
            check_elements(elements, load_chgnet())
        except ValueError as exc:
            raise ConfigError(f"prescreen: {exc}; set prescreen.enabled: false") from None
    return parent


def md_preflight(config) -> Structure:
    """Check an on-the-fly MD config before anything is written: the structure reads
    and is ordered, the oracle Maker imports and knows the elements, and the
    descriptors accept them. Returns the structure. Raises ConfigError,
    EnumerationError or ValueError."""
    from alcampaign.campaign.jobs import check_oracle_elements, import_maker
    from alcampaign.campaign.otf_md import initial_atoms, new_potential

    structure = read_structure(config.system.structure)
    if not structure.is_ordered:
        raise ConfigError(f"system.structure {config.system.structure} must be ordered for MD")
    elements = sorted({el.symbol for el in structure.composition})
    check_oracle_elements(import_maker(config.oracle.maker, config.oracle.kwargs), elements)
    atoms = initial_atoms(config, structure)
    new_potential(config, elements).descriptor.atom_features(atoms)
    return structure
