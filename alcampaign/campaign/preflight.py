"""Preflight: everything that can be checked before a campaign writes anything."""

from __future__ import annotations

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
