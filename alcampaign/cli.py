"""The ``alcampaign`` command line (typer + rich): parse, call, print.

Every command parses its options, calls the campaign layer (:mod:`alcampaign.campaign`:
flows, preflight, query, external oracle, status, managers) and prints what it got
back; no domain logic lives here.

Exit codes: 0 success; 1 the campaign ran but did not reach a stop (a job failed);
2 bad input (config, structure file, store file, unreachable database, a campaign name
the store does not hold), in which case nothing has been written anywhere.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from alcampaign.campaign import lease
from alcampaign.campaign.preflight import md_preflight, preflight
from alcampaign.campaign.status import FINISHED, status_record, waiting_for
from alcampaign.config import (
    DEFAULT_MAX_CANDIDATES,
    CampaignConfig,
    ConfigError,
    alcampaign_home,
    format_validation_error,
    load_config,
)
from alcampaign.errors import CampaignNotFound
from alcampaign.store.facade import open_stores
from alcampaign.structures.enumeration import EnumerationError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Active-learning campaigns for materials: jobflow jobs, maggma stores.",
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="JobStore YAML (see stores/); default: the embedded database "
        "in $ALCAMPAIGN_HOME (~/.alcampaign).",
    ),
]


ManagerOption = Annotated[
    str,
    typer.Option(
        "--manager",
        help="local (jobflow run_locally, here), fireworks (a LaunchPad) or jobflow-remote "
        "(a project); see docs/managers.md.",
    ),
]
LaunchpadOption = Annotated[
    Path | None,
    typer.Option(
        "--launchpad",
        help="fireworks: LaunchPad YAML (${VAR} expanded); default: FireWorks' own "
        "(LAUNCHPAD_LOC, my_launchpad.yaml).",
    ),
]
LaunchOption = Annotated[
    bool,
    typer.Option(
        "--launch",
        help="fireworks: run the rockets here until the campaign stops "
        "(default: only submit, for the group's workers).",
    ),
]
ProjectOption = Annotated[
    str | None, typer.Option("--project", help="jobflow-remote: project name (default: its own).")
]
WorkerOption = Annotated[
    str | None, typer.Option("--worker", help="jobflow-remote: worker (default: the first).")
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="local: oracle jobs of a batch run at once, each in its own process with "
        "one torch/BLAS thread (default: resources.workers of the config, or "
        "$ALCAMPAIGN_WORKERS).",
    ),
]
WorkerStoreOption = Annotated[
    str | None,
    typer.Option(
        "--worker-store",
        help="jobflow-remote: the store YAML as seen from the worker ($ALCAMPAIGN_STORE); "
        "default: --store's absolute path, or 'embedded'.",
    ),
]
SetOption = Annotated[
    list[str],
    typer.Option(
        "--set",
        help="Override a config field, FIELD=VALUE (VALUE read as YAML; repeatable), e.g. "
        "--set enumeration.max_size=4 --set stopping.max_oracle_calls=15.",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def command(*args, **kwargs):
    """``app.command`` whose command exits 2 with the error's message on bad input
    (:class:`~alcampaign.errors.CampaignNotFound`, ``ConfigError``) raised anywhere
    below it."""

    def register(fn):
        @functools.wraps(fn)
        def checked(*a, **k):
            try:
                return fn(*a, **k)
            except (CampaignNotFound, ConfigError) as exc:
                raise _fail(str(exc)) from None

        return app.command(*args, **kwargs)(checked)

    return register


class _JobFailures(logging.Handler):
    """Collects jobflow's 'job failed' reports so the CLI can show them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "failed with exception" in message:
            self.messages.append(message)


def _apply_resources(config, workers: int | None):
    """The thread/process policy for this run (alcampaign.campaign.resources)."""
    from alcampaign.campaign.resources import prepare

    try:
        return prepare(config, workers)
    except (ConfigError, ValueError) as exc:
        raise _fail(f"resources: {exc}") from None


def _prewarm(resources, oracle: dict) -> None:
    """Start the oracle batches' worker processes now (campaign run here, under its lease),
    so they import the oracle's modules while the campaign enumerates and prescreens."""
    from alcampaign.campaign.parallel import oracle_modules, prewarm

    prewarm(resources.workers, resources.threads_per_process, oracle_modules(oracle))


def execute(flow, job_store, name: str, stores, runner=None) -> dict:
    """Run a campaign flow with ``run_locally`` and return the campaign document.

    Progress goes to the console through the ``alcampaign`` logger. ``runner``, if
    given, is called with the run directory instead (e.g. FireWorks rockets).
    """
    from jobflow import run_locally

    root = alcampaign_home() / "runs" / name
    root.mkdir(parents=True, exist_ok=True)
    failures = _JobFailures()
    ours = logging.getLogger("alcampaign")
    theirs = logging.getLogger("jobflow")
    handler = RichHandler(console=console, show_path=False, markup=False)
    previous = (ours.level, theirs.level)
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    theirs.addHandler(failures)
    theirs.setLevel(logging.INFO)
    try:
        with (
            console.status(f"campaign [bold]{name}[/] running", spinner="dots"),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", FutureWarning)  # jobflow's deprecated monty cd
            if runner is None:
                run_locally(flow, store=job_store, root_dir=root, log=False)
            else:
                runner(root)
    finally:
        ours.removeHandler(handler)
        theirs.removeHandler(failures)
        ours.setLevel(previous[0])
        theirs.setLevel(previous[1])
    for message in failures.messages:
        err_console.print(message, highlight=False, markup=False)
    return stores.get_campaign(name)


def status_table(rec: dict, waiting: str | None = None, live: bool = False) -> Table:
    """One table for ``status`` and the live view: counts, each metric against its
    threshold, the other stopping criteria, the stop reason and what is awaited."""
    title = f"campaign {rec['name']}" + (" (live)" if live else "")
    table = Table(title=title)
    for col in ("", "value", "threshold", "met"):
        table.add_column(col)
    table.add_row("state", str(rec["state"]), "", "")
    table.add_row("iteration", str(rec["iteration"]), "", "")
    table.add_row("oracle calls", str(rec["n_oracle_calls"]), "", "")
    table.add_row("candidates", str(rec["n_candidates"]), "", "")
    res = rec.get("resources")
    if res:
        table.add_row(
            "resources",
            f"{res['workers']} worker(s) x {res['threads_per_process']} thread(s) "
            f"on {res['cores']} cores",
            "",
            "",
        )
    criteria = {c["name"]: c for c in rec["criteria"]}
    method = (rec.get("accuracy") or {}).get("method")
    metrics = rec["metrics"]
    for k, v in metrics.items():
        if k.endswith(("_low", "_high")):
            continue  # shown with their estimate
        c = criteria.pop(k, None)
        energy = k in ("rmse", "mae", "cv_rmse", "cv_mae", "sharpness")
        text = "—" if v is None else f"{v:.4g}" + (" eV/atom" if energy else "")
        label = k
        if k in ("rmse", "mae") and method and v is not None:
            label = f"{k} ({method} estimate)"
            lo, hi = metrics.get(f"{k}_low"), metrics.get(f"{k}_high")
            level = (rec.get("accuracy") or {}).get("level") or 0.9
            if lo is not None and hi is not None:
                text += f", {level:.0%} interval [{lo:.4g}, {hi:.4g}]"
        table.add_row(
            "missing ground states" if k == "missing_ground_states" else label,
            text,
            "" if c is None else f"{c['threshold']:.4g}",
            "" if c is None else ("yes" if c["met"] else "no"),
        )
    for c in criteria.values():
        table.add_row(
            c["name"],
            "—" if c["value"] is None else f"{c['value']:.4g}",
            f"{c['threshold']:.4g}",
            "yes" if c["met"] else "no",
        )
    if rec["stop_reason"]:
        table.add_row("stop reason", rec["stop_reason"], "", "")
    if waiting is not None:
        table.add_row("waiting for", waiting, "", "")
    return table


def _finish(doc: dict | None, name: str, store_file: Path | None) -> None:
    if doc is None:
        raise _fail(f"campaign {name} was not created; see the errors above", 1)
    console.print(status_table(status_record(doc)))
    where = store_file or (alcampaign_home() / "db")
    console.print(
        f"results stored in {where}; see them again with 'alcampaign status {name}'",
        highlight=False,
    )
    if doc["state"] == "waiting":
        console.print(
            f"campaign {name} waits for external answers: 'alcampaign export {name} --out DIR' "
            f"writes the questions and a manifest; then 'alcampaign ingest {name} PATH...' and "
            f"'alcampaign resume {name}'",
            highlight=False,
        )
        return
    if doc["state"] != "stopped":
        raise _fail(
            f"campaign {name} did not reach a stop (state {doc['state']}); fix the "
            f"error above, then 'alcampaign resume {name}'",
            1,
        )


def _dispatch(flow, manager: str, setup: dict, job_store, name: str, stores, store, jfr) -> None:
    """Run or submit a campaign flow with the chosen manager and report."""
    from alcampaign.campaign import managers

    where = f" --store {store}" if store else ""
    if manager == "local":
        _finish(execute(flow, job_store, name, stores), name, store)
    elif manager == "fireworks":
        launchpad = setup["launchpad"]
        ids = managers.submit_fireworks(flow, setup["template"], launchpad, name)
        console.print(
            f"{len(ids)} Fireworks of campaign {name} added to the LaunchPad "
            f"({launchpad.name}); the controller adds each iteration as it runs",
            highlight=False,
        )
        if setup["launch"]:
            rockets = lambda root: managers.launch_rockets(launchpad, root, name)  # noqa: E731
            _finish(execute(None, job_store, name, stores, rockets), name, store)
            return
        console.print(
            "the group's workers run it ('rlaunch -l my_launchpad.yaml rapidfire', or "
            f"'qlaunch'); follow it with 'alcampaign status {name}{where}'",
            highlight=False,
        )
    else:
        ids = managers.submit_jobflow_remote(flow, store_file=store, **jfr)
        console.print(
            f"{len(ids)} jobs of campaign {name} submitted to jobflow-remote; the "
            f"project's runner executes them ('jf runner start'); follow it with "
            f"'alcampaign status {name}{where}' or 'jf flow list'",
            highlight=False,
        )


def _new_name(stores, name: str) -> None:
    """Exit 2 if the store holds a campaign of that name already."""
    if stores.get_campaign(name) is not None:
        raise _fail(
            f"a campaign named {name!r} exists in this store: continue it with "
            f"'alcampaign resume {name}' or choose another --name"
        )


@command()
def run(
    config: Annotated[Path, typer.Argument(help="Campaign config YAML.")],
    store: StoreOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Override the campaign name.")] = None,
    manager: ManagerOption = "local",
    launchpad: LaunchpadOption = None,
    launch: LaunchOption = False,
    project: ProjectOption = None,
    worker: WorkerOption = None,
    worker_store: WorkerStoreOption = None,
    workers: WorkersOption = None,
    overrides: SetOption = [],  # noqa: B006 (typer needs a list default)
) -> None:
    """Run a campaign to its stopping rule (here with run_locally, or through a manager)."""
    from alcampaign.campaign.flows import campaign_flow
    from alcampaign.campaign.managers import prepare_manager

    jfr = {"project": project, "worker": worker, "worker_store": worker_store}
    try:
        setup = prepare_manager(manager, store, launchpad, launch, jfr)
        cfg = load_config(config, name=name, overrides=overrides)
        parent = preflight(cfg)
    except EnumerationError as exc:
        raise _fail(str(exc)) from None
    job_store, stores = open_stores(store)
    resources = _apply_resources(cfg.resources, workers)
    flow = campaign_flow(cfg, parent)
    if manager != "local" and not launch:  # only submitted: the workers' controllers lease
        _new_name(stores, cfg.name)
        _dispatch(flow, manager, setup, job_store, cfg.name, stores, store, jfr)
        return
    # Created here holding the lease, so no other process drives it meanwhile.
    owner = lease.new_owner()
    config_doc = cfg.model_dump(mode="json")
    if not stores.create_campaign_leased(
        cfg.name, config_doc, owner, lease.LEASE_TTL, parent=parent.as_dict()
    ):
        _new_name(stores, cfg.name)
    with lease.campaign_lease(stores, cfg.name, owner, created=True):
        if manager == "local":
            _prewarm(resources, config_doc["oracle"])
        _dispatch(flow, manager, setup, job_store, cfg.name, stores, store, jfr)


def _md_summary_table(doc: dict) -> Table:
    summary = doc.get("md_summary") or {}
    table = Table(title=f"on-the-fly MD {doc['name']}")
    table.add_column("")
    table.add_column("value")
    rows = [
        ("state", doc.get("state")),
        ("MD steps", summary.get("md_steps")),
        ("oracle calls", doc.get("n_oracle_calls")),
        ("  bootstrap", summary.get("n_bootstrap")),
        ("  during MD", summary.get("n_md_calls")),
        ("  at steps", summary.get("call_steps")),
        ("  reasons", summary.get("reasons")),
        ("timestep fs (min/mean/max)", summary.get("dt_fs")),
        ("stop reason", doc.get("stop_reason")),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def _md_finish(doc: dict | None, name: str, store_file: Path | None) -> None:
    if doc is None:
        raise _fail(f"campaign {name} was not created; see the errors above", 1)
    console.print(_md_summary_table(doc))
    where = store_file or (alcampaign_home() / "db")
    console.print(f"results stored in {where}", highlight=False)
    if doc["state"] != "stopped":
        raise _fail(
            f"campaign {name} did not reach a stop (state {doc['state']}); fix the "
            f"error above, then 'alcampaign resume {name}'",
            1,
        )


@command()
def md(
    config: Annotated[Path, typer.Argument(help="On-the-fly MD config YAML.")],
    store: StoreOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Override the campaign name.")] = None,
    overrides: SetOption = [],  # noqa: B006 (typer needs a list default)
) -> None:
    """Run on-the-fly MD (the oracle is called where the potential is unsure) to its end."""
    from alcampaign.campaign.otf_md import md_flow
    from alcampaign.md.config import load_md_config

    try:
        cfg = load_md_config(config, name=name, overrides=overrides)
        structure = md_preflight(cfg)
    except (EnumerationError, ValueError) as exc:
        raise _fail(str(exc)) from None
    job_store, stores = open_stores(store)
    _new_name(stores, cfg.name)
    _apply_resources(None, None)
    doc = execute(md_flow(cfg, structure), job_store, cfg.name, stores)
    _md_finish(doc, cfg.name, store)


def _parse_pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{option} {v!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _enumeration_config(structure: Path, name: str | None, options: dict) -> CampaignConfig:
    """The campaign config of ``alcampaign enumerate``'s options (exit 2 if wrong)."""
    try:
        occupancies = {
            el: {sp.split(":")[0]: float(sp.split(":")[1]) for sp in spec.split(",")}
            for el, spec in _parse_pairs(options.pop("occupancy"), "--occupancy").items()
        }
        concentrations = {
            k: float(v)
            for k, v in _parse_pairs(options.pop("concentration"), "--concentration").items()
        }
    except (ValueError, IndexError) as exc:
        raise _fail(f"--occupancy/--concentration: {exc}") from None
    prescreen = {k: options.pop(k) for k in ("prescreen", "forces", "relax_steps", "workers")}
    raw = {
        "name": structure.stem if name is None else name,
        "system": {"structure": str(structure.resolve()), "occupancies": occupancies or None},
        "enumeration": {**options, "concentrations": concentrations or None},
        "prescreen": {"enabled": prescreen.pop("prescreen"), **prescreen},
    }
    if not structure.is_file():
        raise ConfigError(f"structure file {structure} does not exist")
    try:
        return CampaignConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "(options)")) from None


@command("enumerate")
def enumerate_command(
    structure: Annotated[Path, typer.Argument(help="Disordered parent (CIF, POSCAR, ...).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name in the store; default: the file name.")
    ] = None,
    store: StoreOption = None,
    min_size: Annotated[int, typer.Option(help="Smallest supercell (primitive cells).")] = 1,
    max_size: Annotated[int, typer.Option(help="Largest supercell (primitive cells).")] = 4,
    concentration: Annotated[
        list[str], typer.Option(help="Target fraction on its sublattice, e.g. Li=0.5 (repeatable).")
    ] = [],  # noqa: B006
    tolerance: Annotated[float, typer.Option(help="Tolerance of the concentration.")] = 1e-6,
    occupancy: Annotated[
        list[str],
        typer.Option(
            help="Override occupancies of the sites holding an element, e.g. 'Li=Li+:0.5' "
            "(repeatable)."
        ),
    ] = [],  # noqa: B006
    charge_balanced: Annotated[bool, typer.Option(help="Charge-neutral orderings only.")] = False,
    keep: Annotated[
        int | None, typer.Option(help="Keep at most N (smallest cells first, then by id).")
    ] = None,
    max_candidates: Annotated[
        int, typer.Option(help="Refuse above N orderings (estimated before enumerating).")
    ] = DEFAULT_MAX_CANDIDATES,
    prescreen: Annotated[bool, typer.Option(help="CHGNet prescreen.")] = True,
    forces: Annotated[bool, typer.Option(help="Prescreen forces and stress too.")] = False,
    relax_steps: Annotated[int, typer.Option(help="Short CHGNet relaxation steps.")] = 0,
    workers: Annotated[
        int, typer.Option(help="Prescreen processes (0: one per CPU core).", min=0)
    ] = 0,
) -> None:
    """Enumerate the orderings of a disordered structure, prescreen them, and store them.

    Prints the number of structures and the CHGNet energy range and mean (eV/atom).
    """
    # Every option but these three goes into the config as it is named.
    options = {k: v for k, v in locals().items() if k not in ("structure", "name", "store")}
    from alcampaign.campaign.flows import enumeration_flow

    cfg = _enumeration_config(structure, name, options)
    try:
        parent = preflight(cfg, check_oracles=False)
    except EnumerationError as exc:
        raise _fail(str(exc)) from None
    job_store, stores = open_stores(store)
    if stores.get_campaign(cfg.name) is not None:
        raise _fail(f"{cfg.name!r} exists in this store; choose another --name")
    doc = execute(enumeration_flow(cfg, parent), job_store, cfg.name, stores)
    if doc is None or not doc.get("enumeration"):
        raise _fail("the enumeration did not finish; see the errors above", 1)
    stores.update_campaign(cfg.name, {"state": "enumerated"})
    _print_enumeration(doc, structure.name, cfg.name)


def _print_enumeration(doc: dict, source: str, name: str) -> None:
    n = doc["enumeration"]["n_candidates"]
    console.print(
        f"{n} structures enumerated from {source} "
        f"({doc['enumeration']['seconds']} s); stored as '{name}'",
        highlight=False,
    )
    p = doc.get("prescreen") or {}
    if "energy_min" in p:
        console.print(
            f"CHGNet energy range: {p['energy_min']:.4f} to {p['energy_max']:.4f} eV/atom; "
            f"mean {p['energy_mean']:.4f} eV/atom ({p['n_screened']} screened in "
            f"{p['seconds']} s)",
            highlight=False,
        )


@command()
def export(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    fmt: Annotated[str, typer.Option("--format", help="cif, poscar or extxyz.")] = "cif",
    store: StoreOption = None,
) -> None:
    """Write the questions waiting for an external oracle, with a manifest."""
    from alcampaign.campaign.external import FORMATS, export_questions

    if fmt not in FORMATS:
        raise _fail(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    _, stores = open_stores(store, must_exist=name)
    done = export_questions(stores, name, out, fmt)
    if not done.n_questions:
        console.print(f"campaign {name} has no open questions (state {done.state})")
        return
    console.print(
        f"{done.n_questions} questions written to {out} (manifest: {done.manifest})",
        highlight=False,
    )


@command()
def ingest(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    paths: Annotated[list[Path], typer.Argument(help="Answer files or VASP directories.")],
    store: StoreOption = None,
) -> None:
    """Store answers from an external oracle (checked against their questions).

    Every file and answer is checked before anything is stored: with any wrong answer
    (named with its file and line) nothing is stored and the exit code is 2. Answers
    already stored with the same energy are skipped (ingesting twice changes nothing).
    """
    from alcampaign.campaign.external import ingest_answers

    _, stores = open_stores(store, must_exist=name)
    done = ingest_answers(stores, name, paths)
    console.print(
        f"stored {done.stored} answers ({done.skipped} already stored); "
        f"{done.open_questions} questions still open; continue with "
        f"'alcampaign resume {name}'",
        highlight=False,
    )
    for e in done.errors:
        err_console.print(f"[bold red]rejected:[/] {e}", highlight=False)
    if done.errors:
        err_console.print("nothing was stored: fix the answers above and ingest again")
        raise typer.Exit(2)


@command()
def report(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs and index.html.")],
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Another campaign (e.g. a random-acquisition run) drawn on the learning curve."
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Plots and one self-contained HTML page of what a campaign learned and spent."""
    from alcampaign.report.build import collect, write_report

    _, stores = open_stores(store, must_exist=name)
    for campaign in (name, baseline):
        if campaign is not None:
            stores.require_campaign(campaign, ["name"])
    info = write_report(collect(stores, name, baseline), out)
    console.print(
        f"report of {name}: {out / 'index.html'} ({len(info['plots'])} plots)", highlight=False
    )


@command()
def query(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    formula: Annotated[str | None, typer.Option(help="Reduced formula, e.g. CuAu.")] = None,
    state: Annotated[
        str | None, typer.Option(help="pool, acquired, requested, labelled or failed.")
    ] = None,
    emin: Annotated[
        float | None, typer.Option(help="Lowest energy per atom (eV/atom) of --energy.")
    ] = None,
    emax: Annotated[
        float | None, typer.Option(help="Highest energy per atom (eV/atom) of --energy.")
    ] = None,
    energy: Annotated[
        str,
        typer.Option(
            help="The energy --emin/--emax bound and rows are sorted by: label (the "
            "oracle's), chgnet (the prescreen's) or predicted (the current model's)."
        ),
    ] = "label",
    iteration: Annotated[int | None, typer.Option(help="Acquired in this iteration.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    limit: Annotated[int, typer.Option(help="At most this many rows (0: all).", min=0)] = 50,
    store: StoreOption = None,
) -> None:
    """Read candidates back with their energies, each in its own column (eV/atom).

    ``label_energy_per_atom``: the oracle's answer; ``chgnet_energy_per_atom``: the
    CHGNet prescreen; ``predicted_energy_per_atom`` and ``predicted_std``: the latest
    model's prediction of the oracle and its standard deviation.
    """
    from alcampaign.campaign.query import FORMATS, QueryFilter, query_candidates

    if fmt not in FORMATS:
        raise _fail(f"--format {fmt!r}: choose table, json or csv")
    filters = QueryFilter(formula, state, iteration, emin, emax, energy)
    filters.check()
    _, stores = open_stores(store, must_exist=name)
    result = query_candidates(stores, name, filters)
    shown = result.rows if limit == 0 else result.rows[:limit]
    if fmt == "json":
        typer.echo(json.dumps(shown))
    elif fmt == "csv":
        typer.echo(_csv(shown))
    else:
        console.print(_query_table(name, shown, len(result.rows), result.model_iteration))


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    from alcampaign.campaign.query import COLUMNS

    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().rstrip("\n")


def _query_table(name: str, rows: list[dict], total: int, model_iteration: int | None) -> Table:
    from alcampaign.campaign.query import COLUMNS

    model = "no model yet" if model_iteration is None else f"model of iteration {model_iteration}"
    table = Table(title=f"{name}: {len(rows)} of {total} candidates (eV/atom; {model})")
    headers = {
        "label_energy_per_atom": "label",
        "chgnet_energy_per_atom": "chgnet",
        "predicted_energy_per_atom": "predicted",
        "predicted_std": "std",
        "p_ground_state": "P(hull)",
        "hull_distance": "E_hull",
    }
    for col in COLUMNS:
        table.add_column(headers.get(col, col))
    for r in rows:
        table.add_row(*(_cell(r[col], col in headers) for col in COLUMNS))
    return table


def _cell(value, energy: bool) -> str:
    if value is None:
        return ""
    return f"{value:.5f}" if energy else str(value)


@command()
def resume(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    store: StoreOption = None,
    manager: ManagerOption = "local",
    launchpad: LaunchpadOption = None,
    launch: LaunchOption = False,
    project: ProjectOption = None,
    worker: WorkerOption = None,
    worker_store: WorkerStoreOption = None,
    workers: WorkersOption = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="If another process is running the campaign, wait until it is done "
            "(default: say who runs it and exit 0).",
        ),
    ] = False,
) -> None:
    """Continue a stored campaign from wherever it stopped (no label is lost or repeated).

    One process at a time drives a campaign (the campaign lease, see README).
    """
    from alcampaign.campaign.managers import prepare_manager

    jfr = {"project": project, "worker": worker, "worker_store": worker_store}
    setup = prepare_manager(manager, store, launchpad, launch, jfr)
    job_store, stores = open_stores(store, must_exist=name)
    doc = stores.require_campaign(name)
    config = doc.get("config") or {}
    resources = _apply_resources(config.get("resources"), workers)
    if manager != "local" and not launch:
        _resume(name, store, manager, setup, job_store, stores, doc, jfr)
        return
    try:
        with lease.campaign_lease(stores, name, wait=float("inf") if wait else 0.0):
            doc = stores.require_campaign(name)  # as the previous holder left it
            if doc["state"] == "running":
                _prewarm(resources, config.get("oracle") or {})
            _resume(name, store, manager, setup, job_store, stores, doc, jfr)
    except lease.LeaseBusy as busy:
        console.print(
            f"{busy}: leaving it to that process (exit 0). Follow it with 'alcampaign "
            f"status {name}', or wait for it with 'alcampaign resume {name} --wait'",
            highlight=False,
        )


def _resume(name, store, manager, setup, job_store, stores, doc, jfr) -> None:
    """Continue ``doc``'s campaign (under the lease when run here)."""
    from alcampaign.campaign.flows import resume_flow

    if doc.get("kind") == "otf_md":
        from alcampaign.campaign.otf_md import md_resume_flow

        if doc["state"] != "running":
            console.print(f"campaign {name} is {doc['state']}: {doc.get('stop_reason') or ''}")
        else:
            doc = execute(md_resume_flow(name), job_store, name, stores)
        _md_finish(doc, name, store)
        return
    if doc["state"] in FINISHED:
        console.print(f"campaign {name} is {doc['state']}: {doc.get('stop_reason') or ''}")
        _finish(doc, name, store)
        return
    if doc["state"] == "waiting":
        stores.update_campaign(name, {"state": "running"})
    _dispatch(resume_flow(name), manager, setup, job_store, name, stores, store, jfr)


@command()
def status(
    name: Annotated[str | None, typer.Argument(help="Campaign name; default: the latest.")] = None,
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Live view until the campaign stops (Ctrl-C to leave).")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes (--watch).")] = 2.0,
    max_updates: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Iteration, oracle calls, metrics, state and stop reason of a campaign."""
    _, stores = open_stores(store, must_exist=name or True)
    if name is None:
        campaigns = stores.list_campaigns()
        if not campaigns:
            raise _fail("no campaign in this store yet: start one with 'alcampaign run CONFIG'")
        name = campaigns[0]["name"]
    doc = stores.require_campaign(name)
    if watch:
        _watch(stores, name, interval, max_updates)
    elif as_json:
        typer.echo(json.dumps(status_record(doc), default=str))
    else:
        console.print(status_table(status_record(doc)))


@command()
def serve(
    store: StoreOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to bind. The default serves this machine only; anything else "
            "exposes the unauthenticated read-only dashboard (see docs/dashboard.md)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    poll: Annotated[
        float, typer.Option(help="Seconds between page refreshes (0: on reload only).")
    ] = 10.0,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A host name the server answers to besides localhost, 127.0.0.1 and ::1 "
            "(repeat for several); requests naming any other Host are refused."
        ),
    ] = None,
) -> None:
    """Serve the read-only web dashboard and HTTP API over the campaign stores."""
    import uvicorn

    from alcampaign.serve.api import create_app

    if not 0 < port < 65536:
        raise _fail(f"--port {port}: choose 1 to 65535")
    if poll < 0:
        raise _fail(f"--poll {poll}: must be 0 or more")
    from alcampaign.serve.security import normalise_host
    from alcampaign.store.redaction import install_log_redaction

    hosts = list(allowed_host or [])
    if host not in ("0.0.0.0", "::", ""):
        hosts.append(host)  # the bound address itself is a name the server answers to
    try:
        hosts = [normalise_host(h) for h in hosts]
    except ValueError as exc:
        raise _fail(f"--allowed-host: {exc}") from None
    check_port_free(host, port)
    _, stores = open_stores(store, must_exist=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[bold yellow]warning:[/] serving on {host}: anyone who can reach this address "
            "can read every campaign (no authentication); see docs/dashboard.md. Clients "
            "must address it by an allowed name: add the names they use with --allowed-host",
            highlight=False,
        )
    console.print(f"dashboard on http://{host}:{port}/ (Ctrl-C to stop)", highlight=False)
    install_log_redaction()
    app = create_app(stores, poll_seconds=poll, allowed_hosts=hosts)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def check_port_free(host: str, port: int) -> None:
    """Raise ConfigError when ``host:port`` cannot be bound (in use, or not an address
    of this machine), before the server starts."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"--host {host}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "choose another --port"
            ) from None


def _watch(stores, name: str, interval: float, max_updates: int | None) -> None:
    import time

    from rich.live import Live

    n = 0
    with Live(console=console, auto_refresh=False) as live:
        while True:
            doc = stores.require_campaign(name)
            live.update(
                status_table(status_record(doc), waiting_for(stores, doc), live=True),
                refresh=True,
            )
            n += 1
            if doc["state"] in ("stopped", "failed") or (max_updates and n >= max_updates):
                return
            try:
                time.sleep(interval)
            except KeyboardInterrupt:
                return


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover - python -m alcampaign.cli
    main()
