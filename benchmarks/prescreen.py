"""CHGNet prescreen throughput: a plain per-structure loop against alcampaign's path.

Runs on the same structures, in one process run (ratios, not absolute times):

* ``loop``: ``model.predict_structure(s)`` per structure, torch's default threads, as
  the plain script in the project's seed document does (energy, forces, stress,
  magmoms);
* ``loop_one_thread``: the same with one torch thread;
* ``batched_default``: CHGNet's own batched ``predict_structure(list, batch_size=16)``
  (forces included), one thread: the variant seen *slower* than the loop;
* ``ours``: :func:`alcampaign.prescreen.chgnet_prescreen` without forces (energies,
  magmoms and embeddings in batches under ``torch.inference_mode``, one thread);
* ``ours_2_workers``: the same in two processes;
* ``ours_forces``: with forces and stress (one structure at a time);
* ``ours_forces_2_workers``.

Also reports the share of graph construction. Prints JSON. Usage::

    python benchmarks/prescreen.py [--n 128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def structures(n: int):
    """Li0.5CoO2 orderings from the shipped layered-oxide CIF (16-32 atoms)."""
    from alcampaign.enumeration import enumerate_orderings, load_parent

    parent = load_parent(ROOT / "examples" / "li05coo2_layered.cif")
    found = enumerate_orderings(parent, 1, 8, concentrations={"Li": 0.5})
    return [o.structure for o in found[:n]]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    import torch

    from alcampaign.prescreen import chgnet_prescreen, load_chgnet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    ss = structures(args.n)
    model = load_chgnet()
    default_threads = torch.get_num_threads()
    seconds = {}
    seconds["loop"] = timed(lambda: [model.predict_structure(s) for s in ss])
    torch.set_num_threads(1)
    seconds["loop_one_thread"] = timed(lambda: [model.predict_structure(s) for s in ss])
    seconds["batched_default"] = timed(lambda: model.predict_structure(ss, batch_size=16))
    seconds["graphs_only"] = timed(lambda: [model.graph_converter(s) for s in ss])
    torch.set_num_threads(default_threads)
    seconds["ours"] = timed(lambda: chgnet_prescreen(ss, model, forces=False))
    seconds["ours_2_workers"] = timed(lambda: chgnet_prescreen(ss, forces=False, workers=2))
    seconds["ours_forces"] = timed(lambda: chgnet_prescreen(ss, model, forces=True))
    seconds["ours_forces_2_workers"] = timed(lambda: chgnet_prescreen(ss, forces=True, workers=2))
    loop = seconds["loop"]
    print(
        json.dumps(
            {
                "benchmark": "prescreen",
                "n_structures": len(ss),
                "atoms_per_structure": [min(len(s) for s in ss), max(len(s) for s in ss)],
                "torch_default_threads": default_threads,
                "structures_per_second": {
                    k: round(len(ss) / v, 1) for k, v in seconds.items() if k != "graphs_only"
                },
                "speedup_vs_loop": {
                    k: round(loop / v, 2)
                    for k, v in seconds.items()
                    if k not in ("loop", "graphs_only")
                },
                "graph_construction_share_of_loop": round(seconds["graphs_only"] / loop, 3),
                "target_5x": loop / seconds["ours_2_workers"] >= 5,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
