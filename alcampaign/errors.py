"""Error types shared by every layer (one home each).

The CLI maps each to its exit code: :class:`CampaignNotFound` and ``ConfigError``
(bad input) exit 2.
"""

from __future__ import annotations


class CampaignNotFound(LookupError):
    """No campaign of that name in the store (exit code 2 in the CLI)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no campaign named {name!r} in this store ('alcampaign status' lists them; "
            "--store picks another store)"
        )
        self.name = name
