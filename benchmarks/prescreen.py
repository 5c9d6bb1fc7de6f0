"""CHGNet prescreen throughput: a plain per-structure loop against alcampaign's path.

Runs on the same structures, in one process run (ratios, not absolute times); every
variant but the energies-only ones gives energy, forces, stress and magmoms:

* ``loop``: ``model.predict_structure(s)`` per structure (default task ``efsm``), torch's
  default threads, as a plain script would;
* ``loop_one_thread``: the same with one torch thread;
* ``ours``: :func:`alcampaign.chgnet.prescreen.chgnet_prescreen` as the prescreen job calls
  it, with forces and stress, plus the crystal embedding: graphs once,
  :mod:`alcampaign.chgnet.fast` in batches of 4, one torch thread per process and one
  forked worker process per core (the default ``workers=0``);
* ``ours_one_process``: the same in this process only (``workers=1``);
* ``ours_two_threads``: the same with two torch threads in this process;
* ``ours_energies``: energies, magmoms and embeddings only (no forces);
* ``batched_default``: CHGNet's own ``predict_structure(list, batch_size=16)``, one
  thread, on at most 32 of the structures (it is the slow one), once after all repeats.

``speedup_with_forces`` (the issue's >= 5x target: ``ours`` with forces) divides by the
faster of the two loops, so that a loop slowed by thread contention does not flatter the
ratio; ``speedup_vs_faster_loop`` gives every variant's ratio per repeat. Also
reports the share of graph construction and the peak memory. Prints JSON. Usage::

    python benchmarks/prescreen.py [--n 128] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def structures(n: int):
    """Li0.5CoO2 orderings from the shipped layered-oxide CIF (7-28 atoms)."""
    from alcampaign.structures.enumeration import enumerate_orderings, load_parent

    parent = load_parent(ROOT / "examples" / "li05coo2_layered.cif")
    found = enumerate_orderings(parent, 1, 8, concentrations={"Li": 0.5})
    return [o.structure for o in found[:n]]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    print(f"  {seconds:.1f} s", file=sys.stderr, flush=True)  # progress
    return seconds


def run_once(ss, model, default_threads: int) -> dict[str, float]:
    """Structures per second of each variant."""
    import torch

    from alcampaign.chgnet.prescreen import chgnet_prescreen

    rate = {}
    torch.set_num_threads(default_threads)
    rate["loop"] = len(ss) / timed(lambda: [model.predict_structure(s) for s in ss])
    torch.set_num_threads(1)
    rate["loop_one_thread"] = len(ss) / timed(lambda: [model.predict_structure(s) for s in ss])
    rate["graphs_only"] = len(ss) / timed(lambda: [model.graph_converter(s) for s in ss])
    torch.set_num_threads(default_threads)
    rate["ours"] = len(ss) / timed(lambda: chgnet_prescreen(ss, model))
    rate["ours_one_process"] = len(ss) / timed(lambda: chgnet_prescreen(ss, model, workers=1))
    rate["ours_two_threads"] = len(ss) / timed(
        lambda: chgnet_prescreen(ss, model, workers=1, threads=2)
    )
    rate["ours_energies"] = len(ss) / timed(lambda: chgnet_prescreen(ss, model, forces=False))
    return rate


def batched_default(ss, model) -> float:
    """CHGNet's own batched call, once, after every repeat: it holds ~13 GB of
    second-order graphs, and forking workers from a process that large is slower."""
    import torch

    few = ss[:32]
    torch.set_num_threads(1)
    return len(few) / timed(lambda: model.predict_structure(few))


def main() -> None:
    import torch

    from alcampaign.chgnet.prescreen import load_chgnet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    ss = structures(args.n)
    model = load_chgnet()
    default_threads = torch.get_num_threads()
    from alcampaign.chgnet.prescreen import chgnet_prescreen

    # Warm-up of both paths, as each runs: torch's first call; our kernels' build (~1 s,
    # once per machine: cached under ~/.cache/alcampaign) and a first pool of workers.
    model.predict_structure(ss[0])
    chgnet_prescreen(ss[:32], model)
    runs = [run_once(ss, model, default_threads) for _ in range(args.repeats)]
    batched = batched_default(ss, model)
    for r in runs:
        r["batched_default"] = batched
    best = {k: max(r[k] for r in runs) for k in runs[0]}
    ratios = [{k: r[k] / r["loop"] for k in r if k not in ("loop", "graphs_only")} for r in runs]
    # The target is judged against the faster loop of the two thread settings: with other
    # processes on the cores, torch's default two threads can make the loop ~10x slower.
    fair = [
        {k: r[k] / max(r["loop"], r["loop_one_thread"]) for k in q}
        for r, q in zip(runs, ratios, strict=True)
    ]
    mean = {k: sum(q[k] for q in fair) / len(fair) for k in fair[0]}
    print(
        json.dumps(
            {
                "benchmark": "prescreen",
                "n_structures": len(ss),
                "atoms_per_structure": [min(len(s) for s in ss), max(len(s) for s in ss)],
                "torch_default_threads": default_threads,
                "repeats": args.repeats,
                "structures_per_second": {
                    k: round(v, 1) for k, v in best.items() if k != "graphs_only"
                },
                "speedup_vs_default_loop": {k: [round(q[k], 2) for q in ratios] for k in ratios[0]},
                "speedup_vs_faster_loop": {k: [round(q[k], 2) for q in fair] for k in fair[0]},
                "graph_construction_share_of_loop": round(
                    sum(r["loop"] / r["graphs_only"] for r in runs) / len(runs), 3
                ),
                # the prescreen as the job runs it (default settings), mean over repeats
                "speedup_with_forces": round(mean["ours"], 2),
                "speedup_energies_only": round(mean["ours_energies"], 2),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                "target_5x": mean["ours"] >= 5,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
