"""CHGNet prescreen of candidate structures: energies, forces, magmoms, embeddings.

Measured on a 2-core CPU (docs/enumeration.md): a loop of ``predict_structure`` calls
spends ~60% of its time in the force/stress backward pass, which CHGNet runs twice per
call with ``create_graph=True`` (a second-order graph kept for training), ~25% in the
linear layers of the forward pass and ~12% building graphs. The prescreen builds each
structure's graph once with array operations and runs :mod:`alcampaign.chgnet.fast` on
batches of 2: the same network with its first linear layers split by input block
(fewer multiply-adds), its per-row work in fused kernels (:mod:`alcampaign.chgnet.fused_rows`)
and forces and stress from one first-order gradient per batch; without forces it runs
under ``torch.inference_mode``. By default one forked worker process per CPU core shares
the work, each with one torch thread (threads collapse when other processes share the
cores; processes do not).
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from pymatgen.core import Element, Structure


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.cache
def load_chgnet():
    """The CHGNet model shipped inside the chgnet package (no download), once per process."""
    import io

    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner even when quiet
        return CHGNet.load(verbose=False)


def check_elements(elements: Iterable[str], model) -> None:
    """Raise ``ValueError`` naming any element CHGNet has no embedding for."""
    n_known = model.atom_embedding.embedding.num_embeddings
    unknown = sorted({el for el in elements if Element(el).Z > n_known})
    if unknown:
        raise ValueError(f"CHGNet does not know the element(s) {', '.join(unknown)}")


def chgnet_prescreen(
    structures: Sequence[Structure],
    model=None,
    batch_size: int = 2,
    forces: bool = True,
    relax_steps: int = 0,
    workers: int = 0,
    threads: int = 1,
) -> list[dict]:
    """CHGNet predictions for each structure.

    Parameters
    ----------
    structures
        Ordered structures.
    model
        A loaded CHGNet (default: the packaged one).
    batch_size
        Structures per forward pass (7-28 atoms: 1-2 fastest, 4 ~6% and 16 ~20% slower).
    forces
        Also compute forces (eV/A) and stress (GPa), ~2.5x the cost of the energy pass.
    relax_steps
        If positive, also relax each structure with CHGNet for at most this many steps
        (FIRE, fmax 0.1 eV/A) and record the relaxed energy and structure.
    workers
        Processes to share the work (forked where the platform allows, sharing the
        loaded model). 0 (default): one per CPU core this process may use, but no more
        than one per 16 structures, since a worker costs ~0.3 s to warm up.
    threads
        Torch threads per process during the call.

    Returns
    -------
    list of dict
        Per structure: ``energy_per_atom``, ``total_energy`` (eV), ``magmoms`` (mu_B),
        ``embedding`` (crystal feature vector), ``forces``/``stress`` when asked,
        ``relaxed`` when asked, plus ``model`` and ``model_version``.
    """
    if not structures:
        return []
    if workers == 0:
        workers = max(1, min(_usable_cores(), len(structures) // 16))
    # A model of the caller's reaches forked workers only (spawned ones load their own).
    shareable = model is None or _can_fork()
    if workers > 1 and len(structures) > workers and shareable:
        options = (batch_size, forces, relax_steps, threads)
        return _in_processes(structures, model, workers, options)
    model = model or load_chgnet()
    return _prescreen(structures, model, batch_size, forces, relax_steps, threads)


def _prescreen(structures, model, batch_size, forces, relax_steps, threads=1) -> list[dict]:
    from alcampaign.chgnet.fast import crystal_graph, predict_graphs

    check_elements({el.symbol for s in structures for el in s.composition}, model)
    version = getattr(model, "version", None) or "unknown"
    out: list[dict] = []
    with _torch_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphs = [crystal_graph(model.graph_converter, s) for s in structures]
        preds = predict_graphs(model, graphs, forces=forces, batch_size=batch_size)
        del graphs
        for s, p in zip(structures, preds, strict=True):
            e = float(np.asarray(p["e"]).reshape(()))
            doc = {
                "energy_per_atom": e,
                "total_energy": e * len(s),
                "magmoms": np.asarray(p["m"]).reshape(-1).tolist(),
                "embedding": np.asarray(p["crystal_fea"]).reshape(-1).tolist(),
                "model": "CHGNet",
                "model_version": version,
            }
            if forces:
                doc["forces"] = np.asarray(p["f"]).tolist()
                doc["stress"] = np.asarray(p["s"]).tolist()
            out.append(doc)
        if relax_steps > 0:
            from chgnet.model import StructOptimizer

            relaxer = StructOptimizer(model=model)
            for s, doc in zip(structures, out, strict=True):
                result = relaxer.relax(s, steps=relax_steps, fmax=0.1, verbose=False)
                final = result["final_structure"]
                energies = result["trajectory"].energies
                doc["relaxed"] = {
                    "energy_per_atom": float(energies[-1]) / len(final),
                    "structure": final.as_dict(),
                    "steps": len(energies) - 1,
                }
    return out


def _keep_freed_memory() -> None:
    """Worker start-up: let glibc keep freed memory for reuse instead of handing it back.

    Each batch allocates and frees the same few large arrays; by default glibc returns
    them to the system and the next batch takes page faults to get them back (~2x the
    system time). Workers are short-lived, so their heap may as well stay at its peak.
    Other C libraries: nothing happens.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD, its maximum
    except (OSError, AttributeError):
        pass


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _can_fork() -> bool:
    import multiprocessing as mp

    return "fork" in mp.get_all_start_methods()


#: The model forked workers use: set by the parent just before it forks them.
_FORKED_MODEL: list = []


def _worker(payload) -> list[dict]:
    structures, options = payload
    model = _FORKED_MODEL[0] if _FORKED_MODEL else load_chgnet()
    return _prescreen([Structure.from_dict(s) for s in structures], model, *options)


def _in_processes(structures, model, workers: int, options: tuple) -> list[dict]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # Small tasks, largest structures first, handed out as workers free up: the cost of
    # a structure grows with its atoms (and angles), and the candidates come sorted by
    # cell size, so equal halves would leave one worker idle at the end.
    order = sorted(range(len(structures)), key=lambda i: -len(structures[i]))
    size = max(1, min(2 * options[0], len(order) // (4 * workers)))
    tasks = [order[k : k + size] for k in range(0, len(order), size)]
    payloads = [([structures[i].as_dict() for i in t], options) for t in tasks]
    if _can_fork():
        # fork: the workers share the model loaded here (copy-on-write) and start in
        # milliseconds; spawned ones pay 3-5 s each to import torch and CHGNet. Safe on
        # the CPU because every worker runs torch with its own thread setting
        # (``threads``, 1 by default), so no OpenMP pool of ours is entered after fork.
        from alcampaign.chgnet.fused_rows import load

        _FORKED_MODEL.append(model or load_chgnet())
        load()  # compiled (or found in the cache) once, here
        context = mp.get_context("fork")
    else:
        context = mp.get_context("spawn")
    out: list[dict | None] = [None] * len(structures)
    try:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_keep_freed_memory
        ) as pool:
            for task, docs in zip(tasks, pool.map(_worker, payloads), strict=True):
                for i, doc in zip(task, docs, strict=True):
                    out[i] = doc
    finally:
        _FORKED_MODEL.clear()
    return out
