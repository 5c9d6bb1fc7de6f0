"""Campaign configuration (pydantic) and store specifications (YAML).

A campaign config is a YAML file validated by :class:`CampaignConfig`: an unknown or
malformed field raises :class:`ConfigError` naming the field, before anything is
written anywhere. Store specifications are jobflow ``JobStore`` YAML files (see the
top-level ``stores/`` folder) in which ``${VAR}`` and ``${VAR:-default}`` are replaced
from the environment when the store is loaded, so that hosts, users and passwords live
in the environment and never in a file, a document or a log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

CAMPAIGN_COLLECTIONS = ("candidates", "labels", "models", "campaigns")
EXTERNAL = "external"
REQUIRED_ADDITIONAL_STORES = ("data", *CAMPAIGN_COLLECTIONS)


class ConfigError(ValueError):
    """A campaign config or store file that cannot be used; the message says what to fix."""


MAX_NAME_LENGTH = 100
NAME_PATTERN = re.compile(r"[\w.-]+")


def check_name(name: Any, what: str = "name") -> str:
    """A campaign name that is safe as a database key and as a folder name.

    Letters, digits, ``_``, ``.`` and ``-``; not empty, not ``.`` or ``..`` (a run folder
    named so would be the home folder or its parent), at most ``MAX_NAME_LENGTH``
    characters (file systems refuse longer names).

    Raises
    ------
    ValueError
        The name breaks one of these rules (the message says which).
    """
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} is empty")
    if name in (".", ".."):
        raise ValueError(f"{what} {name!r} is not a usable name")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} has {len(name)} characters; at most {MAX_NAME_LENGTH}")
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{what} {name!r}: use letters, digits, '_', '.' and '-' only")
    return name


CampaignName = Annotated[str, AfterValidator(check_name)]

# YAML aliases are expanded when a config is validated: a few lines of nested aliases
# ("billion laughs") would expand to billions of nodes. Refuse beyond these.
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000


class _LimitedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents whose aliases expand too far."""

    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node)
        return node

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._n_aliases = getattr(self, "_n_aliases", 0) + 1
            if self._n_aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(
                    f"more than {MAX_YAML_ALIASES} aliases (*name); write the values out"
                )
        return super().compose_node(parent, index)


def _check_expansion(root) -> None:
    """Count the nodes of ``root`` with every alias expanded (memoised per node)."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] < 0:
                raise yaml.YAMLError("an alias refers to a value that contains it (a cycle)")
            return sizes[key]
        sizes[key] = -1  # in progress: meeting it again is a cycle
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(n) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        sizes[key] = total
        if total > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_YAML_NODES} values through its aliases"
            )
        return total

    if root is not None:
        size(root)


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with alias expansion limited (see ``MAX_YAML_NODES``).

    Raises
    ------
    yaml.YAMLError
        Not YAML, or aliases that expand beyond the limits.
    """
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    finally:
        loader.dispose()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemConfig(_Strict):
    """The disordered parent structure whose orderings are the candidate pool."""

    structure: Path = Field(
        description="Structure file (CIF, POSCAR, ...) of the parent; partially occupied "
        "sites are the sites to order. A relative path is relative to the config file."
    )
    sublattices: dict[int, list[str]] | None = Field(
        None,
        description="Override the allowed species of chosen sites of the primitive parent: "
        "site index -> element symbols ('X' is a vacancy).",
    )
    occupancies: dict[str, dict[str, float]] | None = Field(
        None,
        description="Override the occupancy of every site holding an element before the "
        "primitive cell is found, e.g. {Li: {Li+: 0.5}}.",
    )
    symprec: float = Field(0.01, gt=0, description="Symmetry tolerance of the primitive cell.")


DEFAULT_MAX_CANDIDATES = 200_000


class EnumerationConfig(_Strict):
    """Derivative-structure enumeration (icet)."""

    min_size: int = Field(1, ge=1, description="Smallest supercell, in primitive cells.")
    max_size: int = Field(4, ge=1, le=24, description="Largest supercell, in primitive cells.")
    max_candidates: int = Field(
        DEFAULT_MAX_CANDIDATES,
        ge=1,
        description="Refuse, before enumerating, when the estimated number of orderings "
        "exceeds this, and while enumerating, when more than this pass the filters. "
        "Raise it explicitly for a bigger pool.",
    )
    concentrations: dict[str, float] | None = Field(
        None,
        description="Target fraction of an element on the sites that may hold it, e.g. {Li: 0.5}.",
    )
    tolerance: float = Field(1e-6, ge=0, description="Tolerance of the concentration filter.")
    charge_balanced: bool = Field(
        False, description="Keep charge-neutral orderings only (oxidation states from the CIF)."
    )
    keep: int | None = Field(
        None,
        ge=1,
        description="Keep at most this many: smallest supercells first, then by candidate id.",
    )
    backend: Literal["auto", "icet", "enumlib"] = Field(
        "auto",
        description="auto: enumlib when enum.x is on PATH and the sublattices have "
        "no vacancy, else icet.",
    )

    @model_validator(mode="after")
    def _sizes(self) -> EnumerationConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) exceeds max_size ({self.max_size})")
        return self


class FeaturesConfig(_Strict):
    """Featurizer for the surrogate."""

    kind: Literal["cluster_vector", "chgnet_embedding"] = Field(
        "cluster_vector",
        description="cluster_vector: icet cluster vector of the ideal ordering; "
        "chgnet_embedding: the CHGNet crystal embedding from the prescreen (standardised).",
    )
    cutoffs: list[float] = Field(
        [6.0, 4.5], min_length=1, description="Cluster cutoffs (Angstrom) for pairs, triplets, ..."
    )

    @field_validator("cutoffs")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(c <= 0 for c in v):
            raise ValueError("cutoffs must be positive")
        return v


class PrescreenConfig(_Strict):
    """CHGNet prescreen of every candidate."""

    enabled: bool = True
    forces: bool = Field(True, description="Also compute forces and stress (slower).")
    batch_size: int = Field(2, ge=1, description="Structures per CHGNet forward pass.")
    relax_steps: int = Field(
        0, ge=0, description="If > 0, also a short CHGNet relaxation of this many steps."
    )
    workers: int = Field(
        0,
        ge=0,
        description="Processes (one torch thread each); 0: one per CPU core, at most one "
        "per 16 structures.",
    )


def _check_import_path(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", v):
        raise ValueError(f"{v!r} is not an import path like 'package.module.Class'")
    return v


ImportPath = Annotated[str, AfterValidator(_check_import_path)]


class FidelityConfig(_Strict):
    """A cheaper fidelity for cost-aware multi-fidelity acquisition."""

    maker: ImportPath = Field(description="Import path of the cheap fidelity's Maker.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Maker keyword arguments.")
    fidelity: str = Field("cheap", description="Name of this fidelity in the labels store.")
    cost: float = Field(0.05, gt=0, description="Cost of one call, in the oracle's unit.")


class OracleConfig(_Strict):
    """The expensive reference: any atomate2 Maker, named by import path."""

    maker: str = Field(
        "atomate2.ase.jobs.EmtRelaxMaker",
        description="Import path of an atomate2/jobflow Maker whose make(structure) "
        "returns a job with a task document (output.energy, structure), or 'external': "
        "questions are exported and answers ingested by hand (alcampaign export/ingest).",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Maker keyword arguments.")
    fidelity: str = Field("oracle", description="Name of this fidelity in the labels store.")
    cost: float = Field(1.0, gt=0, description="Cost of one call, in your unit of choice.")
    cheap: FidelityConfig | None = Field(
        None, description="A cheap fidelity linked to this one (acquisition.rule cost_aware)."
    )
    plausible_window: float | None = Field(
        5.0,
        gt=0,
        description="Ingested answers (eV/atom) must lie within this of the candidate's "
        "CHGNet prescreen or cheap-fidelity energy (wide for DFT vs CHGNet, narrow for unit "
        "errors); null: only the absolute bound of 100 eV/atom.",
    )

    @field_validator("maker")
    @classmethod
    def _import_path(cls, v: str) -> str:
        return v if v == EXTERNAL else _check_import_path(v)

    @property
    def external(self) -> bool:
        """Whether a person (or a script) outside the workflow answers."""
        return self.maker == EXTERNAL


class SurrogateConfig(_Strict):
    """Surrogate model."""

    kind: Literal["bayesian_linear", "ensemble"] = Field(
        "bayesian_linear",
        description="bayesian_linear: analytic posterior; ensemble: bootstrap committee of them.",
    )
    alpha: float | None = Field(None, gt=0, description="Prior precision; null: evidence.")
    beta: float | None = Field(None, gt=0, description="Noise precision; null: evidence.")
    n_members: int = Field(8, ge=2, description="Committee size of the ensemble.")
    prior: Literal["hierarchical", "isotropic", "auto"] = Field(
        "hierarchical",
        description="Prior of the weights: hierarchical (precision per cluster order, growing "
        "with the cluster diameter; Mueller & Ceder 2009), isotropic (one precision), or auto "
        "(both, averaged by evidence). Hyperparameters by evidence times weak hyperpriors.",
    )
    basis: Literal["evidence", "fixed"] = Field(
        "evidence",
        description="evidence: average over nested sub-bases of features.cutoffs weighted by "
        "evidence (offer the largest cutoffs you can afford); fixed: every cluster of them.",
    )
    cheap_energy: Literal["auto", "on", "off"] = Field(
        "auto",
        description="The CHGNet prescreen energy per atom as an extra feature with its own "
        "weight (delta learning): auto averages the models with and without it by evidence; needs "
        "prescreen.enabled (ignored by acquisition.rule cost_aware).",
    )

    @model_validator(mode="after")
    def _alpha_only_classic(self) -> SurrogateConfig:
        if self.alpha is not None and not self.classic:
            raise ValueError(
                "surrogate.alpha (one prior precision) needs prior: isotropic, basis: fixed "
                "and cheap_energy: off; the other priors have their own hyperparameters"
            )
        return self

    @property
    def classic(self) -> bool:
        """Isotropic prior on the fixed basis without the cheap energy: the plain
        Bayesian linear model."""
        return self.prior == "isotropic" and self.basis == "fixed" and self.cheap_energy == "off"


class AcquisitionConfig(_Strict):
    """How each iteration chooses its questions."""

    rule: Literal[
        "max_variance",
        "mutual_information",
        "d_optimal",
        "cost_aware",
        "lower_confidence_bound",
        "ground_state",
        "random",
    ] = "max_variance"
    batch_size: int = Field(5, ge=1, description="Oracle calls per iteration.")
    kappa: float = Field(2.0, ge=0, description="lower_confidence_bound: mu - kappa sigma.")
    n_samples: int = Field(
        1000,
        ge=10,
        description="Joint posterior samples of the convex hull (ground_state rule, "
        "p_ground_state, stopping.missing_ground_states).",
    )
    coverage_radius: float | None = Field(
        None,
        gt=0,
        description="Radius of the coverage metric; null: the median "
        "nearest-neighbour distance in the pool.",
    )


class DomainConfig(_Strict):
    """Domain of applicability: flag candidates far from the training features."""

    mahalanobis_threshold: float | None = Field(
        None, gt=0, description="null: sqrt of the chi-square quantile (rank degrees of freedom)."
    )
    leverage_threshold: float | None = Field(None, gt=0, description="null: 3 p / n.")
    quantile: float = Field(0.99, gt=0, lt=1, description="Quantile of the default threshold.")
    ridge: float = Field(
        1e-3,
        ge=0,
        description="Added to the training covariance and Gram matrix (times their mean "
        "diagonal) before inverting, so directions no label explored count as far away "
        "(with fewer labels than features); 0: pseudo-inverse, blind to them.",
    )


class InitialDesignConfig(_Strict):
    """The first labels, before any model exists."""

    n_initial: int = Field(8, ge=1, description="Candidates labelled before the first fit.")
    method: Literal["random"] = "random"
    end_members: bool = Field(
        True,
        description="Label one candidate at each corner of the composition space (the "
        "pure elements or end compounds) first: every hull needs them.",
    )


class StoppingConfig(_Strict):
    """Stopping portfolio: limits, and quality targets on honest accuracy estimates."""

    max_oracle_calls: int = Field(60, ge=1, description="Oracle budget (calls).")
    max_cost: float | None = Field(None, gt=0, description="Cost budget over all fidelities.")
    rmse_target: float | None = Field(
        0.010,
        gt=0,
        description="Stop when the upper end of the pool RMSE interval (eV/atom, see "
        "accuracy_estimate) is below.",
    )
    mae_target: float | None = Field(
        None,
        gt=0,
        description="Stop when the upper end of the pool MAE interval (eV/atom) is below.",
    )
    force_rmse_target: float | None = Field(None, gt=0, description="Force RMSE (eV/A).")
    force_mae_target: float | None = Field(None, gt=0, description="Force MAE (eV/A).")
    ece_target: float | None = Field(
        None,
        gt=0,
        le=0.5,
        description="Expected calibration error of the recalibrated predictive on held-out "
        "labels (0 is calibrated; 0.05 is a careful choice).",
    )
    max_std_residual_target: float | None = Field(
        None,
        gt=0,
        description="Fixed bound on the largest |held-out residual| / predictive sigma. It "
        "does not account for the number of labels: prefer max_std_residual_alpha.",
    )
    max_std_residual_alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Outlier check: the largest |held-out residual| / sigma must stay below "
        "the Sidak threshold that n calibrated Gaussian residuals exceed with probability "
        "alpha (e.g. 0.05: 2.8 at n = 10, 4.1 at n = 1000).",
    )
    accuracy_estimate: Literal["posterior", "iwcv", "cv", "audit"] = Field(
        "posterior",
        description="Pool-wide error estimate behind rmse/mae: posterior (calibrated "
        "predictive's expected error over the pool), iwcv (importance-weighted CV), "
        "cv (plain CV, biased under active sampling), audit (random audit sample).",
    )
    accuracy_level: float = Field(
        0.9, gt=0, lt=1, description="Coverage of the accuracy estimate's interval."
    )
    calibration: Literal["variance", "student_t", "isotonic"] = Field(
        "variance",
        description="Recalibration of every prediction, fitted on the cross-validated "
        "residuals: variance (one factor on sigma, stays Gaussian), student_t (scaled "
        "Student t, heavy tails), isotonic (quantile recalibration, Kuleshov et al. 2018).",
    )
    calibration_weighting: Literal["importance", "none"] = Field(
        "importance",
        description="importance: weight the cross-validated residuals by the pool/labelled "
        "density ratio in the recalibration, the ECE and the posterior estimate, so they "
        "describe the pool and not only where the acquisition rule looked; none: unweighted.",
    )
    audit_size: int = Field(
        0,
        ge=0,
        description="Random candidates labelled at the start as an audit sample: never "
        "trained on, never chosen by an acquisition rule (they count in the budget).",
    )
    plateau_window: int | None = Field(
        None,
        ge=1,
        description="Stop when the RMSE improved by less than plateau_tolerance "
        "over this many iterations.",
    )
    plateau_tolerance: float = Field(0.05, ge=0, description="Relative RMSE improvement.")
    cv_folds: int = Field(5, ge=2, description="Folds of the cross-validation.")
    min_labels: int = Field(10, ge=3, description="Accuracy targets count from this many labels.")
    missing_ground_states: float | None = Field(
        None,
        gt=0,
        description="Stop when the expected number of convex-hull ground states not yet "
        "labelled (from the sampled hulls) is below this, from min_labels oracle calls on.",
    )
    hull_tolerance: float = Field(
        0.005,
        ge=0,
        le=1,
        description="eV/atom. For missing_ground_states, an unlabelled candidate counts "
        "as a missing ground state in a sampled hull only when it is a vertex of it more "
        "than this below the hull of the labelled candidates: polymorphs that would move "
        "the hull by less (near-degenerate orderings, within the surrogate's and the "
        "oracle's accuracy) do not hold the campaign. 0 counts every unlabelled vertex.",
    )
    max_failure_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The campaign fails when more oracle calls than this "
        "fraction failed (failed candidates are never asked again).",
    )

    @model_validator(mode="after")
    def _audit(self) -> StoppingConfig:
        if self.accuracy_estimate == "audit" and self.audit_size < 3:
            raise ValueError("accuracy_estimate audit needs audit_size of at least 3")
        return self


class ResourcesConfig(_Strict):
    """How a campaign uses this machine's cores (see ``alcampaign.campaign.resources``)."""

    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Oracle jobs of one batch run at once, each in its own process "
        "(local manager; $ALCAMPAIGN_WORKERS or 'run --workers' override it).",
    )
    threads_per_process: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="torch and BLAS threads in each process; null: $OMP_NUM_THREADS when "
        "set (a cluster's allocation), else 1 (threads fight other programs for cores; "
        "use workers for parallelism).",
    )


class CampaignConfig(_Strict):
    """A whole campaign, as read from YAML."""

    name: CampaignName = Field(
        description="Campaign name (unique in its store): letters, digits, '_', '.', '-'; "
        "1 to 100 characters; not '.' or '..'."
    )
    seed: int = Field(0, description="Seed of every random choice of the campaign.")
    system: SystemConfig
    enumeration: EnumerationConfig = EnumerationConfig()
    features: FeaturesConfig = FeaturesConfig()
    prescreen: PrescreenConfig = PrescreenConfig()
    oracle: OracleConfig = OracleConfig()
    surrogate: SurrogateConfig = SurrogateConfig()
    acquisition: AcquisitionConfig = AcquisitionConfig()
    initial_design: InitialDesignConfig = InitialDesignConfig()
    stopping: StoppingConfig = StoppingConfig()
    domain: DomainConfig = DomainConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @model_validator(mode="after")
    def _consistent(self) -> CampaignConfig:
        if self.acquisition.rule == "cost_aware" and self.oracle.cheap is None:
            raise ValueError("acquisition.rule cost_aware needs oracle.cheap (the cheap fidelity)")
        if self.oracle.cheap is not None and self.acquisition.rule != "cost_aware":
            raise ValueError("oracle.cheap is only used by acquisition.rule cost_aware")
        if self.oracle.cheap is not None and self.oracle.cheap.fidelity == self.oracle.fidelity:
            raise ValueError("oracle.cheap.fidelity must differ from oracle.fidelity")
        if self.surrogate.cheap_energy == "on" and not self.prescreen.enabled:
            raise ValueError("surrogate.cheap_energy on needs prescreen.enabled: true")
        if self.features.kind == "chgnet_embedding" and not self.prescreen.enabled:
            raise ValueError("features.kind chgnet_embedding needs prescreen.enabled: true")
        first = self.initial_design.n_initial + self.stopping.audit_size
        if first > self.stopping.max_oracle_calls:
            raise ValueError(
                f"initial_design.n_initial + stopping.audit_size ({first}) exceeds "
                f"stopping.max_oracle_calls ({self.stopping.max_oracle_calls})"
            )
        return self


def read_text(path: Path, what: str) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped).

    Raises
    ------
    ConfigError
        The file cannot be read or is not text.
    """
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}); is it a binary file?"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid campaign config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


_M = TypeVar("_M", bound=BaseModel)


def load_config(
    path: str | Path, name: str | None = None, overrides: Sequence[str] = ()
) -> CampaignConfig:
    """Read and validate a campaign config.

    Parameters
    ----------
    path
        YAML file. Relative paths inside it are resolved against its folder.
    name
        Override the campaign name.
    overrides
        ``FIELD=VALUE`` strings (the CLI's ``--set``), applied before validation; see
        :func:`apply_overrides`.

    Raises
    ------
    ConfigError
        The file is missing, is not YAML, or a field is invalid (the field is named).
    """
    return load_yaml_model(path, CampaignConfig, name, overrides)


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Set dotted fields of a raw (unvalidated) config from ``FIELD=VALUE`` strings.

    ``VALUE`` is read as YAML, so ``stopping.max_oracle_calls=15``,
    ``features.cutoffs=[5.0]`` and ``prescreen.enabled=false`` give a number, a list
    and a boolean. Missing intermediate mappings are created; the model's validation
    afterwards names any unknown or malformed field.

    Raises
    ------
    ConfigError
        An override without ``=``, with an empty field name, a value that is not YAML,
        or a path through a field that is not a mapping.
    """
    for item in overrides:
        field, sep, text = item.partition("=")
        parts = field.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. enumeration.max_size=4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from None
        node = raw
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item!r}: {where} is not a mapping of fields")
        node[parts[-1]] = value
    return raw


def load_yaml_model(
    path: str | Path,
    model: type[_M],
    name: str | None = None,
    overrides: Sequence[str] = (),
) -> _M:
    """Read a YAML config into ``model`` (a config with ``name`` and
    ``system.structure``), resolving the structure path against the file's folder;
    ``overrides`` are ``--set FIELD=VALUE`` strings (:func:`apply_overrides`).

    Raises
    ------
    ConfigError
        The file is missing, is not YAML, a field is invalid (named), or the structure
        file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = safe_load_yaml(read_text(path, "config file"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of fields, not {type(raw).__name__}"
        )
    apply_overrides(raw, overrides)
    if name is not None:
        raw["name"] = name
    try:
        config = model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
    structure = config.system.structure
    if not structure.is_absolute():
        config.system.structure = (path.parent / structure).resolve()
    if not config.system.structure.is_file():
        raise ConfigError(f"system.structure: file {config.system.structure} does not exist")
    return config


ENV_VAR = re.compile(r"\$\{([A-Za-z_]\w*)(?::-([^}]*))?\}")


def expand_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from the environment.

    Raises
    ------
    ConfigError
        A variable without a default is not set.
    """
    env = os.environ if environ is None else environ

    def sub(match: re.Match) -> str:
        var, default = match.group(1), match.group(2)
        value = env.get(var)
        if value is None or value == "":
            if default is None:
                raise ConfigError(
                    f"environment variable {var} is not set (the store file needs it)"
                )
            return default
        return value

    return ENV_VAR.sub(sub, text)


def expand_paths(spec: Any) -> Any:
    """Expand ``~`` in every ``database_path`` of a store spec."""
    if isinstance(spec, dict):
        return {
            k: os.path.expanduser(v)
            if k == "database_path" and isinstance(v, str)
            else expand_paths(v)
            for k, v in spec.items()
        }
    return spec


def read_store_spec(path: str | Path, expand: bool = True) -> dict:
    """Read and check a JobStore YAML spec.

    ``expand``: replace ``${VAR}`` references from the environment and ``~`` in
    database paths; without it the spec comes back as written (a template for workers
    that expand it themselves).

    Raises
    ------
    ConfigError
        The file is missing, malformed, lacks a required store, or (expanding) names an
        unset environment variable.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"store file {path} does not exist")
    text = read_text(path, "store file")
    try:
        spec = safe_load_yaml(expand_env(text) if expand else text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"store file {path} is not valid YAML: {exc}") from None
    validate_store_spec(spec, str(path))
    return expand_paths(spec) if expand else spec


def validate_store_spec(spec: Any, source: str) -> None:
    """Check that a JobStore spec names a docs store and every campaign store."""
    if not isinstance(spec, dict) or "docs_store" not in spec:
        raise ConfigError(
            f"store file {source}: needs a 'docs_store' entry (jobflow JOB_STORE format)"
        )
    extra = spec.get("additional_stores") or {}
    missing = [s for s in REQUIRED_ADDITIONAL_STORES if s not in extra]
    if missing:
        raise ConfigError(f"store file {source}: additional_stores lacks {', '.join(missing)}")
    for key, sub in {"docs_store": spec["docs_store"], **extra}.items():
        if not isinstance(sub, dict) or "type" not in sub:
            raise ConfigError(f"store file {source}: store {key!r} needs a 'type' (a maggma Store)")


def alcampaign_home() -> Path:
    """Folder of the embedded database and run directories (``$ALCAMPAIGN_HOME``)."""
    return Path(os.environ.get("ALCAMPAIGN_HOME") or "~/.alcampaign").expanduser()


def embedded_store_spec(home: Path | None = None) -> dict:
    """The default JobStore spec: MontyStore collections under ``home/db``.

    Equivalent to ``stores/embedded.yaml`` with ``$ALCAMPAIGN_HOME`` expanded.
    """
    path = str((home or alcampaign_home()) / "db")

    def monty(collection: str, key: str) -> dict:
        return {
            "type": "MontyStore",
            "database_path": path,
            "database_name": "alcampaign",
            "collection_name": collection,
            "key": key,
        }

    keys = {
        "data": "uuid",
        "candidates": "campaign",
        "labels": "campaign",
        "models": "campaign",
        "campaigns": "name",
        "blocks": "campaign",
    }
    return {
        "docs_store": monty("docs", "uuid"),
        "additional_stores": {c: monty(c, k) for c, k in keys.items()},
    }


def stopping_thresholds(config: CampaignConfig):
    """The :class:`~alcampaign.science.stopping.StoppingThresholds` of a config."""
    from alcampaign.science.stopping import StoppingThresholds

    return StoppingThresholds(
        **config.stopping.model_dump(
            exclude={
                "cv_folds", "accuracy_estimate", "accuracy_level", "audit_size",
                "calibration", "calibration_weighting",
                "missing_ground_states", "hull_tolerance",
            }
        )
    )
