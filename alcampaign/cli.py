"""The ``alcampaign`` command line (typer + rich).

Exit codes: 0 success; 1 the campaign ran but did not reach a stop (a job failed);
2 bad input (config, structure file, store file, unreachable database), in which case
nothing has been written anywhere.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from pymatgen.core import Structure
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from alcampaign.campaign.preflight import preflight
from alcampaign.campaign.status import status_record
from alcampaign.config import (
    EXTERNAL,
    CampaignConfig,
    ConfigError,
    alcampaign_home,
    format_validation_error,
    load_config,
)
from alcampaign.store.facade import open_stores
from alcampaign.structures.enumeration import (
    EnumerationError,
    read_structure,
)

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
WorkerStoreOption = Annotated[
    str | None,
    typer.Option(
        "--worker-store",
        help="jobflow-remote: the store YAML as seen from the worker ($ALCAMPAIGN_STORE); "
        "default: --store's absolute path, or 'embedded'.",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


class _JobFailures(logging.Handler):
    """Collects jobflow's 'job failed' reports so the CLI can show them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "failed with exception" in message:
            self.messages.append(message)


def _campaign_or_fail(store_file: Path | None, name: str):
    """Open the stores and read a campaign; exit 2 with a clear message if either fails."""
    try:
        job_store, stores = open_stores(store_file)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    doc = stores.get_campaign(name)
    if doc is None:
        raise _fail(f"no campaign named {name!r} in this store")
    return job_store, stores, doc


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
    criteria = {c["name"]: c for c in rec["criteria"]}
    for k, v in rec["metrics"].items():
        c = criteria.pop(k, None)
        unit = " eV/atom" if k in ("rmse", "mae") else ""
        table.add_row(
            k.replace("_", " ") if k == "missing_ground_states" else f"cv {k}",
            "—" if v is None else f"{v:.4g}{unit}",
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


def _manager_setup(
    manager: str, store: Path | None, launchpad: Path | None, launch: bool, jfr: dict
) -> dict:
    """Check the manager options and open what the manager needs (raises ConfigError)."""
    from alcampaign.campaign.managers import MANAGERS, load_launchpad, read_store_template

    if manager not in MANAGERS:
        raise ConfigError(f"--manager {manager!r}: choose one of {', '.join(MANAGERS)}")
    if manager != "fireworks" and (launch or launchpad is not None):
        raise ConfigError("--launch and --launchpad go with --manager fireworks")
    if manager != "jobflow-remote" and any(jfr.values()):
        raise ConfigError("--project, --worker and --worker-store go with --manager jobflow-remote")
    if manager == "local":
        return {}
    import importlib

    try:
        importlib.import_module("fireworks" if manager == "fireworks" else "jobflow_remote")
    except ImportError as exc:
        raise ConfigError(
            f"--manager {manager} needs {exc.name}: pip install 'alcampaign[managers]'"
        ) from None
    if manager == "fireworks":
        return {"template": read_store_template(store), "launchpad": load_launchpad(launchpad)}
    return {}


def _dispatch(flow, manager: str, setup: dict, job_store, name: str, stores, store, jfr) -> None:
    """Run or submit a campaign flow with the chosen manager and report."""
    from alcampaign.campaign import managers

    where = f" --store {store}" if store else ""
    if manager == "local":
        _finish(execute(flow, job_store, name, stores), name, store)
        return
    try:
        if manager == "fireworks":
            launchpad = setup["launchpad"]
            ids = managers.submit_fireworks(flow, setup["template"], launchpad, name)
            console.print(
                f"{len(ids)} Fireworks of campaign {name} added to the LaunchPad "
                f"({launchpad.name}); the controller adds each iteration as it runs",
                highlight=False,
            )
            if setup["launch"]:
                doc = execute(
                    None,
                    job_store,
                    name,
                    stores,
                    lambda root: managers.launch_rockets(launchpad, root, name),
                )
                _finish(doc, name, store)
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
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@app.command()
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
) -> None:
    """Run a campaign to its stopping rule (here with run_locally, or through a manager)."""
    from alcampaign.campaign.flows import campaign_flow

    jfr = {"project": project, "worker": worker, "worker_store": worker_store}
    try:
        setup = _manager_setup(manager, store, launchpad, launch, jfr)
        cfg = load_config(config, name=name)
        parent = preflight(cfg)
        job_store, stores = open_stores(store)
    except (ConfigError, EnumerationError) as exc:
        raise _fail(str(exc)) from None
    if stores.get_campaign(cfg.name) is not None:
        raise _fail(
            f"a campaign named {cfg.name!r} exists in this store: continue it with "
            f"'alcampaign resume {cfg.name}' or choose another --name"
        )
    setup["launch"] = launch
    flow = campaign_flow(cfg, parent)
    _dispatch(flow, manager, setup, job_store, cfg.name, stores, store, jfr)


def md_preflight(cfg) -> Structure:
    """Check an on-the-fly MD config before anything is written: the structure reads, the
    oracle Maker imports and knows the elements, and the descriptors accept them."""
    from alcampaign.campaign.jobs import check_oracle_elements, import_maker
    from alcampaign.campaign.otf_md import initial_atoms, new_potential

    structure = read_structure(cfg.system.structure)
    if not structure.is_ordered:
        raise ConfigError(f"system.structure {cfg.system.structure} must be ordered for MD")
    elements = sorted({el.symbol for el in structure.composition})
    check_oracle_elements(import_maker(cfg.oracle.maker, cfg.oracle.kwargs), elements)
    atoms = initial_atoms(cfg, structure)
    new_potential(cfg, elements).descriptor.atom_features(atoms)
    return structure


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


@app.command()
def md(
    config: Annotated[Path, typer.Argument(help="On-the-fly MD config YAML.")],
    store: StoreOption = None,
    name: Annotated[str | None, typer.Option("--name", help="Override the campaign name.")] = None,
) -> None:
    """Run on-the-fly MD (the oracle is called where the potential is unsure) to its end."""
    from alcampaign.campaign.otf_md import md_flow
    from alcampaign.md.config import load_md_config

    try:
        cfg = load_md_config(config, name=name)
        structure = md_preflight(cfg)
        job_store, stores = open_stores(store)
    except (ConfigError, EnumerationError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if stores.get_campaign(cfg.name) is not None:
        raise _fail(
            f"a campaign named {cfg.name!r} exists in this store: continue it with "
            f"'alcampaign resume {cfg.name}' or choose another --name"
        )
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


@app.command("enumerate")
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
    max_candidates: Annotated[int | None, typer.Option(help="Refuse above N orderings.")] = None,
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
    from alcampaign.campaign.flows import enumeration_flow

    try:
        occupancies = {
            el: {sp.split(":")[0]: float(sp.split(":")[1]) for sp in spec.split(",")}
            for el, spec in _parse_pairs(occupancy, "--occupancy").items()
        }
        concentrations = {
            k: float(v) for k, v in _parse_pairs(concentration, "--concentration").items()
        }
    except (ValueError, IndexError) as exc:
        raise _fail(f"--occupancy/--concentration: {exc}") from None
    raw = {
        "name": name or structure.stem,
        "system": {"structure": str(structure.resolve()), "occupancies": occupancies or None},
        "enumeration": {
            "min_size": min_size,
            "max_size": max_size,
            "concentrations": concentrations or None,
            "tolerance": tolerance,
            "charge_balanced": charge_balanced,
            "keep": keep,
            "max_candidates": max_candidates,
        },
        "prescreen": {
            "enabled": prescreen,
            "forces": forces,
            "relax_steps": relax_steps,
            "workers": workers,
        },
    }
    try:
        if not structure.is_file():
            raise ConfigError(f"structure file {structure} does not exist")
        cfg = CampaignConfig.model_validate(raw)
        parent = preflight(cfg, check_oracles=False)
        job_store, stores = open_stores(store)
    except ValidationError as err:
        raise _fail(str(ConfigError(format_validation_error(err, "(options)")))) from None
    except (ConfigError, EnumerationError) as exc:
        raise _fail(str(exc)) from None
    if stores.get_campaign(cfg.name) is not None:
        raise _fail(f"{cfg.name!r} exists in this store; choose another --name")
    doc = execute(enumeration_flow(cfg, parent), job_store, cfg.name, stores)
    if doc is None or not doc.get("enumeration"):
        raise _fail("the enumeration did not finish; see the errors above", 1)
    stores.update_campaign(cfg.name, {"state": "enumerated"})
    n = doc["enumeration"]["n_candidates"]
    console.print(
        f"{n} structures enumerated from {structure.name} "
        f"({doc['enumeration']['seconds']} s); stored as '{cfg.name}'",
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


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    fmt: Annotated[str, typer.Option("--format", help="cif, poscar or extxyz.")] = "cif",
    store: StoreOption = None,
) -> None:
    """Write the questions waiting for an external oracle, with a manifest."""
    from alcampaign.campaign.external import FORMATS, export_requests

    if fmt not in FORMATS:
        raise _fail(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    _, stores, doc = _campaign_or_fail(store, name)
    requests = stores.candidate_table(name, ["structure", "acquisition"], {"state": "requested"})
    if not requests:
        console.print(f"campaign {name} has no open questions (state {doc['state']})")
        return
    fidelity = CampaignConfig.model_validate(doc["config"]).oracle.fidelity
    manifest = export_requests(requests, name, fidelity, out, fmt)
    console.print(
        f"{len(requests)} questions written to {out} (manifest: {manifest})", highlight=False
    )


@app.command()
def ingest(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    paths: Annotated[list[Path], typer.Argument(help="Answer files or VASP directories.")],
    store: StoreOption = None,
) -> None:
    """Store answers from an external oracle (checked against their questions).

    A file with any wrong answer is rejected whole, with an error naming it; answers
    already stored are skipped (ingesting twice changes nothing).
    """
    from alcampaign.campaign.external import AnswerError, check_answer, read_answers
    from alcampaign.store.facade import label_document

    _, stores, doc = _campaign_or_fail(store, name)
    config = CampaignConfig.model_validate(doc["config"])
    fidelity = config.oracle.fidelity
    table = {
        d["candidate_id"]: d
        for d in stores.candidate_table(name, ["state", "structure", "acquisition"])
    }
    labelled = {lab["candidate_id"] for lab in stores.get_labels(name, fidelity, ["status"])}
    errors, stored, skipped = [], 0, 0
    for path in paths:
        try:
            labels = []
            for answer in read_answers(path):
                cid = answer.candidate_id
                if cid not in table:
                    raise AnswerError(
                        f"{answer.source}: unknown candidate id {cid!r} for campaign {name}"
                    )
                if cid in labelled:
                    skipped += 1
                    continue
                if table[cid]["state"] != "requested":
                    raise AnswerError(
                        f"{answer.source}: candidate {cid} was not asked "
                        f"(state {table[cid]['state']})"
                    )
                question = Structure.from_dict(table[cid]["structure"])
                labels.append(
                    label_document(
                        name,
                        cid,
                        fidelity,
                        oracle={"maker": EXTERNAL, "source": str(answer.source)},
                        cost=config.oracle.cost,
                        iteration=(table[cid].get("acquisition") or {}).get("iteration"),
                        energy_per_atom=check_answer(answer, question),
                        structure=answer.structure or question,
                        forces=answer.forces,
                        stress=answer.stress,
                    )
                )
            # The whole file is checked before anything of it is stored.
            stored += stores.add_labels(labels)
            stores.set_state(name, [lab["candidate_id"] for lab in labels], "labelled")
            labelled |= {lab["candidate_id"] for lab in labels}
        except AnswerError as exc:
            errors.append(str(exc))
    if stored:
        stores.update_counts(name, fidelity)
    open_questions = stores.candidates.count({"campaign": name, "state": "requested"})
    console.print(
        f"stored {stored} answers ({skipped} already stored); {open_questions} "
        f"questions still open; continue with 'alcampaign resume {name}'",
        highlight=False,
    )
    for e in errors:
        err_console.print(f"[bold red]rejected:[/] {e}", highlight=False)
    if errors:
        raise typer.Exit(2)


@app.command()
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

    try:
        _, stores = open_stores(store)
        data = collect(stores, name, baseline)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except KeyError as exc:
        raise _fail(exc.args[0]) from None
    info = write_report(data, out)
    console.print(
        f"report of {name}: {out / 'index.html'} ({len(info['plots'])} plots)", highlight=False
    )


@app.command()
def query(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    formula: Annotated[str | None, typer.Option(help="Reduced formula, e.g. CuAu.")] = None,
    state: Annotated[
        str | None, typer.Option(help="pool, acquired, requested, labelled or failed.")
    ] = None,
    emin: Annotated[float | None, typer.Option(help="Lowest energy per atom (eV/atom).")] = None,
    emax: Annotated[float | None, typer.Option(help="Highest energy per atom (eV/atom).")] = None,
    iteration: Annotated[int | None, typer.Option(help="Acquired in this iteration.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    limit: Annotated[int, typer.Option(help="At most this many rows (0: all).")] = 50,
    store: StoreOption = None,
) -> None:
    """Read candidates and their labels back from the stores, with filters.

    The energy is the oracle label where one exists, else the CHGNet prescreen energy;
    the column ``source`` says which.
    """
    import csv
    import io

    from alcampaign.store.facade import CANDIDATE_STATES

    if fmt not in ("table", "json", "csv"):
        raise _fail(f"--format {fmt!r}: choose table, json or csv")
    if state is not None and state not in CANDIDATE_STATES:
        raise _fail(f"--state {state!r}: choose one of {', '.join(CANDIDATE_STATES)}")
    _, stores, doc = _campaign_or_fail(store, name)
    criteria: dict = {}
    if formula:
        criteria["formula"] = formula
    if state:
        criteria["state"] = state
    if iteration is not None:
        criteria["acquisition.iteration"] = iteration
    cands = stores.candidate_table(
        name, ["formula", "n_sites", "state", "acquisition", "prescreen.energy_per_atom"], criteria
    )
    fidelity = doc["config"]["oracle"]["fidelity"]
    labels = {
        lab["candidate_id"]: lab
        for lab in stores.get_labels(name, fidelity, ["energy_per_atom", "status"])
    }
    from alcampaign.campaign.jobs import read_ground_states

    hulls = read_ground_states(stores, name)
    rows = []
    for c in cands:
        lab = labels.get(c["candidate_id"])
        if lab and lab.get("energy_per_atom") is not None:
            energy, source = lab["energy_per_atom"], fidelity
        else:
            energy = (c.get("prescreen") or {}).get("energy_per_atom")
            source = "chgnet" if energy is not None else None
        if (emin is not None or emax is not None) and energy is None:
            continue
        if (emin is not None and energy < emin) or (emax is not None and energy > emax):
            continue
        rows.append(
            {
                "candidate_id": c["candidate_id"],
                "formula": c.get("formula"),
                "n_sites": c.get("n_sites"),
                "state": c.get("state"),
                "iteration": (c.get("acquisition") or {}).get("iteration"),
                "energy_per_atom": energy,
                "source": source,
                "p_ground_state": hulls.get(c["candidate_id"], (None, None))[0],
                "hull_distance": hulls.get(c["candidate_id"], (None, None))[1],
            }
        )
    rows.sort(key=lambda r: (r["energy_per_atom"] is None, r["energy_per_atom"] or 0.0))
    shown = rows if limit == 0 else rows[:limit]
    if fmt == "json":
        typer.echo(json.dumps(shown))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, list(shown[0]) if shown else ["candidate_id"])
        writer.writeheader()
        writer.writerows(shown)
        typer.echo(buf.getvalue().rstrip("\n"))
    else:
        table = Table(title=f"{name}: {len(shown)} of {len(rows)} candidates")
        for col in (
            "candidate_id",
            "formula",
            "n_sites",
            "state",
            "iteration",
            "energy_per_atom",
            "source",
            "p_ground_state",
            "hull_distance",
        ):
            table.add_column(col)
        for r in shown:
            e = r["energy_per_atom"]
            table.add_row(
                r["candidate_id"],
                str(r["formula"]),
                str(r["n_sites"]),
                r["state"],
                "" if r["iteration"] is None else str(r["iteration"]),
                "" if e is None else f"{e:.5f}",
                str(r["source"] or ""),
                "" if r["p_ground_state"] is None else f"{r['p_ground_state']:.3f}",
                "" if r["hull_distance"] is None else f"{r['hull_distance']:.4f}",
            )
        console.print(table)


@app.command()
def resume(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    store: StoreOption = None,
    manager: ManagerOption = "local",
    launchpad: LaunchpadOption = None,
    launch: LaunchOption = False,
    project: ProjectOption = None,
    worker: WorkerOption = None,
    worker_store: WorkerStoreOption = None,
) -> None:
    """Continue a stored campaign from wherever it stopped (no label is lost or repeated)."""
    from alcampaign.campaign.flows import resume_flow

    jfr = {"project": project, "worker": worker, "worker_store": worker_store}
    try:
        setup = _manager_setup(manager, store, launchpad, launch, jfr)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    setup["launch"] = launch
    job_store, stores, doc = _campaign_or_fail(store, name)
    if doc.get("kind") == "otf_md":
        from alcampaign.campaign.otf_md import md_resume_flow

        if doc["state"] != "running":
            console.print(f"campaign {name} is {doc['state']}: {doc.get('stop_reason') or ''}")
        else:
            doc = execute(md_resume_flow(name), job_store, name, stores)
        _md_finish(doc, name, store)
        return
    if doc["state"] in ("stopped", "failed", "enumerated"):
        console.print(f"campaign {name} is {doc['state']}: {doc.get('stop_reason') or ''}")
        _finish(doc, name, store)
        return
    if doc["state"] == "waiting":
        stores.update_campaign(name, {"state": "running"})
    _dispatch(resume_flow(name), manager, setup, job_store, name, stores, store, jfr)


@app.command()
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
    try:
        _, stores = open_stores(store)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if name is None:
        campaigns = stores.list_campaigns()
        if not campaigns:
            raise _fail("no campaign in this store yet: start one with 'alcampaign run CONFIG'", 1)
        name = campaigns[0]["name"]
    doc = stores.get_campaign(name)
    if doc is None:
        raise _fail(f"no campaign named {name!r} in this store", 1)
    if watch:
        _watch(stores, name, interval, max_updates)
        return
    rec = status_record(doc)
    if as_json:
        typer.echo(json.dumps(rec, default=str))
    else:
        console.print(status_table(rec))


@app.command()
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
) -> None:
    """Serve the read-only web dashboard and HTTP API over the campaign stores."""
    import uvicorn

    from alcampaign.serve.api import create_app

    if not 0 < port < 65536:
        raise _fail(f"--port {port}: choose 1 to 65535")
    if poll < 0:
        raise _fail(f"--poll {poll}: must be 0 or more")
    try:
        _, stores = open_stores(store)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[bold yellow]warning:[/] serving on {host}: anyone who can reach this address "
            "can read every campaign (no authentication); see docs/dashboard.md",
            highlight=False,
        )
    console.print(f"dashboard on http://{host}:{port}/ (Ctrl-C to stop)", highlight=False)
    uvicorn.run(create_app(stores, poll_seconds=poll), host=host, port=port, log_level="warning")


def _waiting_for(stores, doc: dict) -> str:
    """What the controller is waiting for, in words."""
    state = doc.get("state")
    if state in ("stopped", "failed", "enumerated"):
        return "nothing: the campaign is " + state
    # From the campaign document and the labels: no scan of the candidates per refresh.
    open_ = stores.open_acquisitions(doc)
    requested = sum(a["external"] for a in open_)
    asked = len(open_) - requested
    if requested:
        return f"{requested} external answers (alcampaign export / ingest / resume)"
    if asked:
        return f"{asked} oracle jobs to finish"
    return "its next decision"


def _watch(stores, name: str, interval: float, max_updates: int | None) -> None:
    import time

    from rich.live import Live

    n = 0
    with Live(console=console, auto_refresh=False) as live:
        while True:
            doc = stores.get_campaign(name)
            live.update(
                status_table(status_record(doc), _waiting_for(stores, doc), live=True),
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
