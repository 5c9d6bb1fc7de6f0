"""The thread and process policy of a campaign: one decision, applied everywhere.

Measured on a 2-core machine with another program busy (docs/benchmarks.md): a CHGNet
relaxation step of a 16-atom cell took 0.3-0.4 s with one torch thread and 1.6-5 s
with torch's default of one thread per core, because OpenMP threads that wait for each
other lose whole time slices to the other program. So the policy is:

* each process runs **one** torch/BLAS thread, unless the config says otherwise
  (``resources.threads_per_process``) or the environment does (``OMP_NUM_THREADS``,
  which batch systems such as SLURM set to the allocation);
* parallelism comes from **processes**: the CHGNet prescreen forks one worker per core
  (``prescreen.workers``), and the oracle jobs of a batch run in ``resources.workers``
  processes (:mod:`alcampaign.campaign.parallel`), overridden by ``$ALCAMPAIGN_WORKERS``
  (what ``alcampaign run --workers N`` sets).

:func:`apply_threads` sets torch's intra-op threads, caps every BLAS/OpenMP pool
(threadpoolctl) and exports ``OMP_NUM_THREADS`` & co. for child processes that start
later. It is called by the CLI before a campaign runs and by every oracle worker.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from alcampaign.config import ConfigError, ResourcesConfig

#: Environment variable that overrides ``resources.workers`` (set by ``run --workers``).
WORKERS_ENV = "ALCAMPAIGN_WORKERS"
#: Thread variables exported for child processes (OpenMP, OpenBLAS, MKL, numexpr).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

_limits = None  # the process-wide threadpoolctl limit, kept alive while the process runs


@dataclass(frozen=True)
class Resources:
    """The policy in force: workers, threads per process and where each came from."""

    workers: int
    threads_per_process: int
    cores: int
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _positive_int(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"${name} must be a positive integer, not {value!r}")
    return n


def resolve(config: ResourcesConfig | None = None, workers: int | None = None) -> Resources:
    """The policy for a campaign on this machine.

    Parameters
    ----------
    config
        The campaign's ``resources`` section (default values when ``None``).
    workers
        An explicit worker count (``run --workers``); else ``$ALCAMPAIGN_WORKERS``, else
        ``config.workers``.
    """
    config = config or ResourcesConfig()
    sources = []
    if workers is None and os.environ.get(WORKERS_ENV):
        workers = _positive_int(os.environ[WORKERS_ENV], WORKERS_ENV)
        sources.append(f"workers from ${WORKERS_ENV}")
    elif workers is not None:
        sources.append("workers from --workers")
    else:
        workers = config.workers
        sources.append("workers from the config")
    if config.threads_per_process is not None:
        threads = config.threads_per_process
        sources.append("threads from the config")
    elif os.environ.get("OMP_NUM_THREADS"):
        threads = _positive_int(os.environ["OMP_NUM_THREADS"], "OMP_NUM_THREADS")
        sources.append("threads from $OMP_NUM_THREADS")
    else:
        threads = 1
        sources.append("one thread per process (default)")
    return Resources(workers, threads, usable_cores(), "; ".join(sources))


def apply_threads(n: int) -> None:
    """Run this process (and children it starts later) with ``n`` torch/BLAS threads."""
    global _limits
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=n)
    try:
        import torch
    except ImportError:  # a campaign without torch (EMT oracle, prescreen off)
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def prepare(config: ResourcesConfig | dict | None, workers: int | None = None) -> Resources:
    """Resolve the policy for a campaign about to run in this process and apply it.

    ``workers`` (from ``run --workers``) is exported as ``$ALCAMPAIGN_WORKERS`` so that
    the jobs of this process (run_locally) see it.
    """
    if isinstance(config, dict):
        config = ResourcesConfig.model_validate(config)
    resources = resolve(config, workers)
    if workers is not None:
        os.environ[WORKERS_ENV] = str(workers)
    apply_threads(resources.threads_per_process)
    return resources
