"""Oracle throughput on one machine: threads, workers, and a competing program.

A batch of CHGNet relaxations of Li0.5CoO2 orderings (the li05coo2_chgnet example's
oracle: atomate2 ``ForceFieldRelaxMaker``) is run three ways, each on an idle machine
and beside one competing CPU-bound process (a Python busy loop):

* ``today``: the jobs one after another in this process with torch's default threads
  (what ``run_locally`` did before the thread policy);
* ``sequential``: one after another with one thread (the policy's default);
* ``workers=N cold``: :func:`alcampaign.campaign.parallel.run_oracle_batch` with N
  worker processes of one thread each, the workers started inside the timing (what
  the first batch would pay without :func:`~alcampaign.campaign.parallel.prewarm`);
* ``workers=N``: the same on the pool the cold run left running, as every batch of a
  campaign finds it (``run`` starts the pool while it enumerates and prescreens).

Each line is JSON: variant, competing, seconds, seconds per relaxation and the ratio to
``today`` idle. Labels are compared across variants (same energies to 1e-6 eV/atom).

    python benchmarks/local_throughput.py                 # 4 relaxations, ~5 minutes
    python benchmarks/local_throughput.py --n 2 --steps 20  # the scaled-down variant
    python benchmarks/local_throughput.py --mixed 5          # the example's own batches, ~7 min
    python benchmarks/local_throughput.py --repeats 7        # the fixed batch, paired, ~3 min

A single timing of a 10-second batch moves by 10-15 % on a shared 2-core virtual
machine (the two workers' slowdown against one process alone ranged from 2 % to 15 %
between runs), so ``--repeats R`` times the fixed batch R times one after another and
on the warm pool, in alternating order (drift of the machine falls on both), and
reports the median and worst of the R paired speed-ups.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _busy() -> None:  # the competing program
    while True:
        pass


def _jobs(n: int, steps: int):
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    from alcampaign.structures.enumeration import enumerate_orderings, load_parent

    parent = load_parent(ROOT / "examples" / "li05coo2_layered.cif")
    found = [o for o in enumerate_orderings(parent, 4, 4)][:n]
    maker = ForceFieldRelaxMaker(force_field_name="CHGNet", steps=steps, relax_cell=True)
    return [maker.make(o.structure) for o in found]


def _same(energies: list[float], reference: list[float]) -> bool:
    """The same labels: energies per atom equal to 1e-6 eV/atom."""
    return max(abs(a - b) for a, b in zip(energies, reference, strict=True)) < 1e-6


def _example_batches(k: int, n: int, seed: int = 0) -> list[list]:
    """``k`` batches of ``n`` candidates drawn at random from the li05coo2 example's own
    enumeration (58 orderings of 1-6 primitive cells, as a campaign's batches mix them)."""
    import random

    from alcampaign.config import load_config
    from alcampaign.structures.enumeration import orderings_from_config, read_structure

    cfg = load_config(ROOT / "examples" / "li05coo2_chgnet.yaml")
    _, orderings = orderings_from_config(cfg, read_structure(cfg.system.structure))
    rng = random.Random(seed)
    return [[o.structure for o in rng.sample(orderings, n)] for _ in range(k)]


def mixed(k: int, n: int, steps: int, workers: int) -> None:
    """The example's mixed cell sizes: one after another, then ``workers`` warm workers
    handing jobs out in the batch's order and largest cell first; a line per batch and
    the median and worst speed-up of each order."""
    import statistics

    import torch
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    from alcampaign.campaign.parallel import prewarm, run_oracle_batch

    maker = ForceFieldRelaxMaker(force_field_name="CHGNet", steps=steps, relax_cell=True)
    prewarm(workers, 1, ("atomate2.forcefields.jobs",))
    torch.set_num_threads(1)
    speedups: dict[str, list[float]] = {"batch order": [], "largest first": []}
    for b, structures in enumerate(_example_batches(k + 1, n)):
        row: dict = {"batch": b, "atoms": [len(s) for s in structures]}
        for variant in ("sequential", "batch order", "largest first"):
            jobs = [maker.make(s) for s in structures]
            store = _store()
            t0 = time.perf_counter()
            if variant == "sequential":
                for j in jobs:
                    j.run(store)
            else:
                run_oracle_batch(jobs, _answers(jobs), store, workers, 1,
                                 balance=variant == "largest first")
            row[variant] = round(time.perf_counter() - t0, 2)
            energies = _energies(store, jobs)
            reference = row.setdefault("energies", energies)
            row["same_energies"] = row.get("same_energies", True) and _same(energies, reference)
        if b == 0:
            continue  # warm-up: the workers' first CHGNet calls
        for variant in speedups:
            row[f"speedup {variant}"] = round(row["sequential"] / row[variant], 2)
            speedups[variant].append(row[f"speedup {variant}"])
        del row["energies"]
        print(json.dumps(row), flush=True)
    print(json.dumps({
        "summary": "mixed", "batches": k, "n": n, "steps": steps, "workers": workers,
        **{f"{v} median / worst": [statistics.median(x), min(x)] for v, x in speedups.items()},
    }), flush=True)


def repeats(r: int, n: int, steps: int, workers: int) -> None:
    """The fixed batch ``r`` times in one process and on ``workers`` warm workers,
    alternating which goes first; a line per round and the median and worst speed-up."""
    import statistics

    from alcampaign.campaign.parallel import prewarm

    prewarm(workers, 1, ("atomate2.forcefields.jobs",))
    run_variant(f"workers={workers}", n, 2, 1)  # warm-up: the workers' first CHGNet calls
    run_variant("sequential", 1, 2, 1)
    speedups, reference = [], None
    for i in range(r):
        order = ["sequential", f"workers={workers}"][:: 1 if i % 2 == 0 else -1]
        seconds = {}
        for variant in order:
            seconds[variant], energies, _ = run_variant(variant, n, steps, 1)
            reference = reference or energies
            if not _same(energies, reference):
                raise RuntimeError(f"round {i}: {variant} labelled the batch differently")
        speedups.append(seconds["sequential"] / seconds[f"workers={workers}"])
        print(json.dumps({"round": i, "first": order[0],
                          **{k: round(v, 2) for k, v in seconds.items()},
                          "speedup": round(speedups[-1], 2), "same_energies": True}), flush=True)
    print(json.dumps({"summary": "repeats", "rounds": r, "n": n, "steps": steps,
                      "workers": workers, "speedup median": round(statistics.median(speedups), 2),
                      "speedup worst": round(min(speedups), 2)}), flush=True)


def _answers(jobs) -> list[dict]:
    """The answer records :func:`run_oracle_batch` fills, one per job."""
    return [{"candidate_id": str(i), "cheap": False, "job_uuid": j.uuid}
            for i, j in enumerate(jobs)]


def _store():
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    store.connect()
    return store


def _energies(store, jobs) -> list[float]:
    out = []
    for j in jobs:
        doc = store.query_one({"uuid": j.uuid}, load=True)
        out.append(doc["output"]["output"]["energy"] / len(doc["output"]["structure"]["sites"]))
    return out


def balance_limit(job_seconds: list[float], workers: int) -> float:
    """The best speed-up ``workers`` processes can reach on jobs of these lengths: their
    sum over the longest worker's share in the best assignment (exhaustive; small n),
    with no contention between the processes."""
    from itertools import product

    best = min(
        max(sum(t for t, w in zip(job_seconds, assign, strict=True) if w == k)
            for k in range(workers))
        for assign in product(range(workers), repeat=len(job_seconds))
    )
    return sum(job_seconds) / best


def run_variant(variant: str, n: int, steps: int, threads: int | None) -> tuple[float, list]:
    """Seconds for the batch, and the energies per atom (and, run one after another,
    each job's seconds)."""
    import torch

    from alcampaign.campaign.parallel import run_oracle_batch, shutdown_pools

    jobs = _jobs(n, steps)
    store = _store()
    job_seconds: list[float] = []
    if variant.endswith("cold"):
        shutdown_pools()
    t0 = time.perf_counter()
    if variant.startswith("workers="):
        run_oracle_batch(jobs, _answers(jobs), store, int(variant.split("=")[1].split()[0]), 1)
    else:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads or previous)
        try:
            for j in jobs:
                t1 = time.perf_counter()
                j.run(store)
                job_seconds.append(round(time.perf_counter() - t1, 2))
        finally:
            torch.set_num_threads(previous)
    return time.perf_counter() - t0, _energies(store, jobs), job_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4, help="relaxations in the batch")
    ap.add_argument("--steps", type=int, default=40, help="relaxation steps each")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mixed", type=int, metavar="K", default=0,
                    help="instead: K random batches of the example's mixed cell sizes, "
                         "batch order vs largest first")
    ap.add_argument("--repeats", type=int, metavar="R", default=0,
                    help="instead: the fixed batch R times, one process vs warm workers, "
                         "paired")
    args = ap.parse_args()
    if args.mixed:
        mixed(args.mixed, args.n, args.steps, args.workers)
    elif args.repeats:
        repeats(args.repeats, args.n, args.steps, args.workers)
    if args.mixed or args.repeats:
        from alcampaign.campaign.parallel import shutdown_pools

        shutdown_pools()
        return
    import torch

    default_threads = torch.get_num_threads()
    w = args.workers
    variants = [("today", default_threads), ("sequential", 1),
                (f"workers={w} cold", 1), (f"workers={w}", 1)]
    run_variant("sequential", 1, 2, 1)  # warm-up: imports, model load
    base = None
    limit = None
    reference = None
    sequential = {}
    for competing in (False, True):
        hog = None
        if competing:
            hog = mp.get_context("spawn").Process(target=_busy, daemon=True)
            hog.start()
        try:
            for variant, threads in variants:
                seconds, energies, job_seconds = run_variant(
                    variant, args.n, args.steps, threads
                )
                reference = reference or energies
                same = _same(energies, reference)
                base = base or seconds
                if variant == "sequential":
                    sequential[competing] = seconds
                    limit = balance_limit(job_seconds, w)
                print(json.dumps({
                    "variant": variant,
                    "threads_per_process": threads,
                    "competing": competing,
                    "n": args.n,
                    "steps": args.steps,
                    "seconds": round(seconds, 2),
                    "seconds_per_relaxation": round(seconds / args.n, 2),
                    "ratio_to_today_idle": round(seconds / base, 2),
                    "speedup_vs_sequential": round(sequential[competing] / seconds, 2)
                    if competing in sequential else None,
                    "same_energies": same,
                    "job_seconds": job_seconds or None,
                    # what equal-speed workers could reach on these jobs' lengths
                    "balance_limit": round(limit, 2)
                    if variant.startswith("workers=") else None,
                }), flush=True)
        finally:
            if hog is not None:
                hog.kill()
    from alcampaign.campaign.parallel import shutdown_pools

    shutdown_pools()


if __name__ == "__main__":
    import contextlib
    import tempfile

    # the relaxations' files land in a scratch folder
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        main()
