"""CHGNet prescreen of candidate structures: energies, forces, magmoms, embeddings.

Measured on a 2-core CPU (DESIGN.md): CHGNet's batched ``predict_structure`` is slower
per structure than a loop when forces are asked for (the force and stress gradients
build a second autograd graph over the whole batch), while an energy-and-magmom pass
is fast in batches. So the prescreen runs energies, magmoms and the crystal embedding
in batches, and forces and stress (optional) one structure at a time. Torch runs on one
thread for the duration of the call: two threads on two busy cores were much slower.
"""

from __future__ import annotations

import contextlib
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


def load_chgnet():
    """The CHGNet model shipped inside the chgnet package (no download)."""
    from chgnet.model import CHGNet

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
    batch_size: int = 16,
    forces: bool = True,
) -> list[dict]:
    """CHGNet predictions for each structure.

    Parameters
    ----------
    structures
        Ordered structures.
    model
        A loaded CHGNet (default: the packaged one).
    batch_size
        Structures per batch in the energy pass.
    forces
        Also compute forces (eV/A) and stress (GPa), one structure at a time.

    Returns
    -------
    list of dict
        Per structure: ``energy_per_atom``, ``total_energy`` (eV), ``magmoms`` (mu_B),
        ``embedding`` (crystal feature vector), and ``forces``/``stress`` when asked,
        plus ``model`` and ``model_version``.
    """
    import torch

    if not structures:
        return []
    model = model or load_chgnet()
    check_elements({el.symbol for s in structures for el in s.composition}, model)
    version = getattr(model, "version", None) or "unknown"
    out: list[dict] = []
    with _torch_threads(1):
        with torch.inference_mode():
            preds = model.predict_structure(
                list(structures), task="em", return_crystal_feas=True, batch_size=batch_size
            )
        if isinstance(preds, dict):
            preds = [preds]
        for s, p in zip(structures, preds, strict=True):
            e = float(np.asarray(p["e"]).reshape(()))
            out.append(
                {
                    "energy_per_atom": e,
                    "total_energy": e * len(s),
                    "magmoms": np.asarray(p["m"]).reshape(-1).tolist(),
                    "embedding": np.asarray(p["crystal_fea"]).reshape(-1).tolist(),
                    "model": "CHGNet",
                    "model_version": version,
                }
            )
        if forces:
            for s, doc in zip(structures, out, strict=True):
                p = model.predict_structure(s, task="efs")
                doc["forces"] = np.asarray(p["f"]).tolist()
                doc["stress"] = np.asarray(p["s"]).tolist()
    return out
