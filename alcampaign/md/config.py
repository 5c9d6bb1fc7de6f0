"""Configuration of an on-the-fly MD campaign (pydantic, extra fields forbidden).

Read with :func:`load_md_config`; a bad field raises
:class:`~alcampaign.config.ConfigError` naming the field, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alcampaign.config import (
    CampaignName,
    ImportPath,
    _Strict,
    load_yaml_model,
)


class MDSystemConfig(_Strict):
    """The simulated cell."""

    structure: Path = Field(
        description="Structure file (CIF, POSCAR, ...); relative to the config file."
    )
    supercell: list[int] = Field(
        [1, 1, 1], min_length=3, max_length=3, description="Repeat the structure along a, b, c."
    )

    @field_validator("supercell")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError("supercell repeats must be >= 1")
        return v


class PairConfig(_Strict):
    """Radial pair functions with a smooth cosine cutoff."""

    r_cut: float = Field(5.0, gt=0, description="Cutoff (Angstrom).")
    n_radial: int = Field(8, ge=1, description="Gaussians per species pair.")
    r_min: float = Field(2.0, gt=0, description="First Gaussian centre (Angstrom).")


class SoapConfig(_Strict):
    """SOAP power spectrum (dscribe, GTO radial basis, analytic derivatives)."""

    enabled: bool = True
    r_cut: float = Field(4.5, gt=1, description="Cutoff (Angstrom).")
    n_max: int = Field(3, ge=1, le=12, description="Radial basis functions.")
    l_max: int = Field(3, ge=0, le=9, description="Largest angular momentum.")
    sigma: float = Field(0.5, gt=0, description="Width of the atomic Gaussians (Angstrom).")


class PotentialConfig(_Strict):
    """The linear potential: E = sum over atoms of w . [pair functions, SOAP]."""

    pair: PairConfig = PairConfig()
    soap: SoapConfig = SoapConfig()


class TimestepConfig(_Strict):
    """Adaptive timestep: shrinks above ``high`` force uncertainty, recovers below ``low``."""

    initial: float = Field(2.0, gt=0, description="First timestep (fs).")
    min: float = Field(0.5, gt=0, description="Smallest timestep (fs).")
    max: float = Field(4.0, gt=0, description="Largest timestep (fs).")
    high: float = Field(0.006, ge=0, description="Shrink above this force std (eV/A).")
    low: float = Field(0.003, ge=0, description="Recover below this force std (eV/A).")
    shrink: float = Field(0.5, gt=0, le=1, description="Factor per step when shrinking.")
    grow: float = Field(1.05, ge=1, description="Factor per step when recovering.")

    @model_validator(mode="after")
    def _order(self) -> TimestepConfig:
        if not self.min <= self.initial <= self.max:
            raise ValueError(
                f"need min <= initial <= max (got {self.min}, {self.initial}, {self.max})"
            )
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) exceeds high ({self.high})")
        return self


class DynamicsConfig(_Strict):
    """The MD run: integrator, length and temperature schedule."""

    integrator: Literal["langevin", "verlet"] = Field(
        "langevin", description="langevin (NVT, follows the schedule) or verlet (NVE)."
    )
    n_steps: int = Field(2000, ge=1, description="Total MD steps over all segments.")
    temperature: list[tuple[int, float]] = Field(
        [(0, 300.0)],
        min_length=1,
        description="Target temperature schedule: (step, K) points, linear in between.",
    )
    friction: float = Field(0.02, gt=0, description="Langevin friction (1/fs).")
    timestep: TimestepConfig = TimestepConfig()

    @field_validator("temperature")
    @classmethod
    def _schedule(cls, v: list[tuple[int, float]]) -> list[tuple[int, float]]:
        steps = [s for s, _ in v]
        if steps != sorted(steps):
            raise ValueError("schedule steps must increase")
        if any(t <= 0 for _, t in v):
            raise ValueError("temperatures must be positive (K)")
        return v


class TriggersConfig(_Strict):
    """When the model must ask the oracle (null switches a criterion off)."""

    force_std: float | None = Field(
        0.02, gt=0, description="Largest epistemic std of a force component (eV/A)."
    )
    mahalanobis_factor: float | None = Field(
        3.0,
        gt=0,
        description="Per-atom Mahalanobis distance above this times the largest over the "
        "training environments.",
    )
    leverage_factor: float | None = Field(
        3.0, gt=0, description="Per-atom leverage above this times the training maximum."
    )
    ridge: float = Field(
        1e-3, ge=0, description="Ridge of the standardised environment covariance."
    )


class BootstrapConfig(_Strict):
    """Labelled frames before the first model: the structure with random displacements."""

    n_frames: int = Field(2, ge=1, description="Frames labelled before the first fit.")
    rattle: float = Field(0.05, ge=0, description="Std of the displacements (Angstrom).")


class MDOracleConfig(_Strict):
    """The reference: an atomate2 Maker doing a single point (static) calculation."""

    maker: ImportPath = Field(
        "atomate2.ase.jobs.EmtRelaxMaker",
        description="Import path of an atomate2 Maker; its task document must hold "
        "output.energy and output.forces at the given positions.",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"steps": 1, "relax_cell": False},
        description="Maker arguments; for an atomate2 ASE relax Maker steps: 1 and "
        "relax_cell: false make it a single point.",
    )
    fidelity: str = Field("oracle", description="Name of this fidelity in the labels store.")
    cost: float = Field(1.0, gt=0, description="Cost of one call.")


class MDStoppingConfig(_Strict):
    """Budget of the campaign."""

    max_oracle_calls: int = Field(
        100,
        ge=1,
        description="Oracle budget (bootstrap included); once spent, the MD finishes on "
        "the model alone.",
    )


class MDCampaignConfig(_Strict):
    """An on-the-fly MD campaign, as read from YAML."""

    name: CampaignName = Field(description="Campaign name (unique in its store); see check_name.")
    seed: int = Field(0, description="Seed of every random choice.")
    system: MDSystemConfig
    potential: PotentialConfig = PotentialConfig()
    md: DynamicsConfig = DynamicsConfig()
    triggers: TriggersConfig = TriggersConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    oracle: MDOracleConfig = MDOracleConfig()
    stopping: MDStoppingConfig = MDStoppingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> MDCampaignConfig:
        if self.bootstrap.n_frames > self.stopping.max_oracle_calls:
            raise ValueError(
                f"bootstrap.n_frames ({self.bootstrap.n_frames}) exceeds "
                f"stopping.max_oracle_calls ({self.stopping.max_oracle_calls})"
            )
        return self


def load_md_config(
    path: str | Path, name: str | None = None, overrides: Sequence[str] = ()
) -> MDCampaignConfig:
    """Read and validate an on-the-fly MD config (relative paths against its folder);
    ``overrides`` are ``--set FIELD=VALUE`` strings
    (:func:`~alcampaign.config.apply_overrides`).

    Raises
    ------
    ConfigError
        Missing file, bad YAML, an invalid field (named), or a missing structure file.
    """
    return load_yaml_model(path, MDCampaignConfig, name, overrides)
