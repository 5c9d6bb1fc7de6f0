"""Who executes a campaign flow: ``local``, ``fireworks`` or ``jobflow-remote``.

The campaign is one jobflow ``Flow`` whose controller adds each iteration with
``Response(addition=...)``; every manager here runs such dynamic flows.

``local``
    jobflow's ``run_locally`` in this process (see :func:`alcampaign.cli.execute`).
``fireworks``
    ``flow_to_workflow`` onto a FireWorks LaunchPad; the rockets run now
    (:func:`launch_rockets`, FireWorks' ``rapidfire``) or on the group's workers.
``jobflow-remote``
    ``submit_flow`` to a jobflow-remote project; the project's runner executes it.

Credentials. ``flow_to_workflow(store=...)`` serialises the store into every Firework
(and into every Firework the controller adds later). A maggma ``MongoStore`` serialises
its URI, password included, so the store given to FireWorks is a
:class:`PortableJobStore`: it serialises as the store file *as written*, with its
``${VAR}`` references, and expands them from the environment of the process that loads
it (the worker). jobflow-remote never ships the store to the worker (a job writes its
output to files that the runner copies into the project's JobStore), so campaign jobs
run by jobflow-remote open the campaign collections themselves, from the store file
named by ``$ALCAMPAIGN_STORE`` on the worker (:func:`campaign_job_store`).
"""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from jobflow import JobStore

from alcampaign.config import (
    ENV_VAR,
    ConfigError,
    alcampaign_home,
    expand_env,
    expand_paths,
    read_store_spec,
    validate_store_spec,
)

MANAGERS = ("local", "fireworks", "jobflow-remote")

#: Environment variable naming the worker's store file under jobflow-remote
#: (a path, or ``embedded`` for the default embedded database in $ALCAMPAIGN_HOME).
STORE_ENV = "ALCAMPAIGN_STORE"

_CREDENTIAL_KEYS = {"password", "passwd", "username", "user"}

# ---------------------------------------------------------------------------
# Store templates: store files with their ${VAR} references kept.


def embedded_store_template() -> dict:
    """The default embedded store, with ``$ALCAMPAIGN_HOME`` left as a reference."""
    from alcampaign.config import embedded_store_spec

    return embedded_store_spec(Path("${ALCAMPAIGN_HOME:-~/.alcampaign}"))


def read_store_template(path: str | Path | None) -> dict:
    """A store file as written (``${VAR}`` references kept), or the embedded default.

    Raises
    ------
    ConfigError
        The file is missing or malformed, lacks a campaign store, or holds a literal
        credential (a password, user or ``user:password@`` in a URI).
    """
    if path is None:
        return embedded_store_template()
    template = read_store_spec(path, expand=False)
    check_no_literal_credentials(template, str(path))
    return template


def check_no_literal_credentials(template: Any, source: str, key: str = "") -> None:
    """Refuse a store template that would carry a credential to the workers.

    A user, password or ``user:password@`` part of a URI must be a ``${VAR}``
    reference, expanded from the worker's environment.
    """
    if isinstance(template, dict):
        for k, v in template.items():
            check_no_literal_credentials(v, source, str(k))
    elif isinstance(template, list):
        for v in template:
            check_no_literal_credentials(v, source, key)
    elif isinstance(template, str):
        literal = key.lower() in _CREDENTIAL_KEYS and ENV_VAR.sub("", template).strip()
        userinfo = re.search(r"://([^/@]*)@", template)
        if userinfo and ENV_VAR.sub("", userinfo.group(1)).replace(":", ""):
            literal = True
        if literal:
            raise ConfigError(
                f"store file {source}: {key!r} holds a literal credential; a store file "
                "used with FireWorks or jobflow-remote is sent to the workers, so put the "
                "secret in an environment variable and write ${VARIABLE} instead"
            )


def _expand_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _expand_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_value(v) for v in value]
    if isinstance(value, str) and ENV_VAR.search(value):
        expanded = expand_env(value)
        if ENV_VAR.fullmatch(value):  # a whole value from the environment, e.g. a port
            parsed = yaml.safe_load(expanded)
            if isinstance(parsed, int | float | bool):
                return parsed
        return expanded
    return value


def expand_store_template(template: dict) -> dict:
    """The JobStore spec of a template, with the environment of this process."""
    spec = _expand_value(template)
    validate_store_spec(spec, "(store template)")
    return expand_paths(spec)


class PortableJobStore(JobStore):
    """A JobStore that serialises as its store template, never as its connections.

    Built from a template (a store file as written), it connects like the JobStore
    of the expanded spec; ``as_dict`` gives back the template only, so a Firework (and
    every Firework the controller adds) carries ``${ALCAMPAIGN_MONGODB_URI}``, not the
    URI, and ``from_dict`` on the worker expands it from the worker's environment.
    """

    def __init__(self, template: dict):
        check_no_literal_credentials(template, "(store template)")
        try:
            built = JobStore.from_dict_spec(expand_store_template(template))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"could not build the job store: {exc}") from None
        super().__init__(
            built.docs_store, built.additional_stores, save=built.save, load=built.load
        )
        self.template = copy.deepcopy(template)

    def as_dict(self) -> dict:
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "template": copy.deepcopy(self.template),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PortableJobStore:
        return cls(d["template"])


# ---------------------------------------------------------------------------
# Worker side: which store a campaign job uses.


def in_jobflow_remote() -> bool:
    """Whether this process runs a job for jobflow-remote (``jf execution run``)."""
    run = sys.modules.get("jobflow_remote.jobs.run")
    return run is not None and run.CURRENT_JOBDOC.job_doc is not None


_worker_store: JobStore | None = None


def campaign_job_store(store: JobStore) -> JobStore:
    """The JobStore whose additional stores hold the campaign collections.

    Under ``local`` and ``fireworks`` it is the store running the job. Under
    jobflow-remote that store is a set of per-job files the runner copies back, so the
    campaign collections come from the store file named by ``$ALCAMPAIGN_STORE``.
    """
    if not in_jobflow_remote():
        return store
    global _worker_store
    if _worker_store is None:
        from alcampaign.store.facade import connect_job_store, load_job_store

        where = os.environ.get(STORE_ENV)
        if not where:
            raise ConfigError(
                f"jobs run by jobflow-remote open the campaign database from ${STORE_ENV} "
                "(a store YAML on the worker, or 'embedded'); set it in the worker's "
                "environment or submit with 'alcampaign run --worker-store PATH'"
            )
        _worker_store = load_job_store(None if where == "embedded" else where)
        connect_job_store(_worker_store)
    return _worker_store


# ---------------------------------------------------------------------------
# FireWorks.


def load_launchpad(path: str | Path | None = None):
    """A FireWorks LaunchPad from a launchpad YAML with ``${VAR}`` references expanded,
    or FireWorks' own default (``LAUNCHPAD_LOC``, ``my_launchpad.yaml``) when ``None``.
    One round trip makes an unreachable database fail here.
    """
    from fireworks import LaunchPad

    try:
        if path is None:
            launchpad = LaunchPad.auto_load()
        else:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"launchpad file {path} does not exist")
            spec = yaml.safe_load(expand_env(path.read_text()))
            if not isinstance(spec, dict):
                raise ConfigError(f"launchpad file {path} must hold a mapping")
            launchpad = LaunchPad.from_dict(spec)
        initialised = launchpad.fw_id_assigner.find_one({}) is not None
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"could not connect to the FireWorks LaunchPad: {type(exc).__name__}: {exc}"
        ) from None
    if not initialised:
        raise ConfigError(
            f"the LaunchPad database {launchpad.name!r} is not initialised: run FireWorks' "
            "'lpad reset' once (it erases any workflow stored there)"
        )
    return launchpad


#: Firework spec key naming the campaign (jobflow copies job metadata into the spec).
CAMPAIGN_KEY = "alcampaign"


def submit_fireworks(flow, template: dict, launchpad, name: str) -> dict[int, int]:
    """Convert a flow to a FireWorks workflow and add it to the LaunchPad.

    Every Firework carries a :class:`PortableJobStore` of ``template`` and the
    campaign name in its spec (``spec.alcampaign``; jobflow hands the metadata on to
    the jobs the controller adds). Returns FireWorks' map of temporary to stored ids.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    flow.update_metadata({CAMPAIGN_KEY: name}, dynamic=True)
    workflow = flow_to_workflow(flow, store=PortableJobStore(template))
    return launchpad.add_wf(workflow)


def launch_rockets(launchpad, root: str | Path, name: str) -> None:
    """Run the campaign's rockets in ``root`` until none is ready (``rapidfire``).

    Only Fireworks of campaign ``name`` are pulled, never other workflows of a shared
    LaunchPad. Fireworks added by the controller become ready as their parents
    complete, so this runs the whole campaign.
    """
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    worker = FWorker(query={f"spec.{CAMPAIGN_KEY}": name})
    rapidfire(launchpad, worker, m_dir=str(root), nlaunches=0, sleep_time=5, strm_lvl="WARNING")


# ---------------------------------------------------------------------------
# jobflow-remote.


def worker_store_value(store_file: str | Path | None, worker_store: str | None) -> str:
    """What ``$ALCAMPAIGN_STORE`` the jobflow-remote worker gets."""
    if worker_store:
        return worker_store
    if store_file is not None:
        return str(Path(store_file).resolve())
    return "embedded"


def submit_jobflow_remote(
    flow,
    *,
    project: str | None = None,
    worker: str | None = None,
    store_file: str | Path | None = None,
    worker_store: str | None = None,
) -> list:
    """Submit a flow to a jobflow-remote project (the project's runner executes it).

    The jobs get ``$ALCAMPAIGN_STORE`` (and ``$ALCAMPAIGN_HOME`` for the embedded
    store) through the execution config; jobs the controller adds inherit it. Only
    paths are exported; credentials stay in the worker's environment.
    """
    from jobflow_remote import submit_flow
    from jobflow_remote.config.base import ExecutionConfig

    value = worker_store_value(store_file, worker_store)
    export = {STORE_ENV: value}
    if value == "embedded":
        export["ALCAMPAIGN_HOME"] = str(alcampaign_home().resolve())
    try:
        return submit_flow(
            flow, worker=worker, project=project, exec_config=ExecutionConfig(export=export)
        )
    except Exception as exc:
        raise ConfigError(f"jobflow-remote: {type(exc).__name__}: {exc}") from None


def prepare_manager(
    manager: str,
    store_file: str | Path | None,
    launchpad: str | Path | None,
    launch: bool,
    jobflow_remote: dict,
) -> dict:
    """Check a manager choice and its options, and open what the manager needs.

    Parameters
    ----------
    manager
        One of :data:`MANAGERS`.
    store_file
        The store YAML (fireworks: read as the template its Fireworks carry).
    launchpad, launch
        fireworks only: the LaunchPad YAML, and whether to run the rockets here.
    jobflow_remote
        jobflow-remote only: ``project``, ``worker``, ``worker_store`` (``None``: unset).

    Returns
    -------
    dict
        ``launch``, and for fireworks ``template`` and ``launchpad``.

    Raises
    ------
    ConfigError
        An unknown manager, an option of another manager, or a manager not installed.
    """
    import importlib

    if manager not in MANAGERS:
        raise ConfigError(f"--manager {manager!r}: choose one of {', '.join(MANAGERS)}")
    if manager != "fireworks" and (launch or launchpad is not None):
        raise ConfigError("--launch and --launchpad go with --manager fireworks")
    if manager != "jobflow-remote" and any(jobflow_remote.values()):
        raise ConfigError("--project, --worker and --worker-store go with --manager jobflow-remote")
    setup: dict = {"launch": launch}
    if manager == "local":
        return setup
    try:
        importlib.import_module("fireworks" if manager == "fireworks" else "jobflow_remote")
    except ImportError as exc:
        raise ConfigError(
            f"--manager {manager} needs {exc.name}: pip install 'alcampaign[managers]'"
        ) from None
    if manager == "fireworks":
        setup.update(template=read_store_template(store_file), launchpad=load_launchpad(launchpad))
    return setup
