"""The split CHGNet pass (alcampaign.chgnet.fast) against CHGNet's own predict_structure.

It reuses CHGNet's private pieces (BatchedGraph, the layers' weights), so these tests
pin its energies, forces, stress, magmoms and crystal features to CHGNet's public
per-structure predictions at float32 rounding.
"""

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from alcampaign.chgnet.fast import FastCHGNet, crystal_graph, predict_graphs, supports
from alcampaign.chgnet.prescreen import chgnet_prescreen, load_chgnet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return load_chgnet()


@pytest.fixture(scope="module")
def structures():
    from alcampaign.structures.enumeration import enumerate_orderings, load_parent

    parent = load_parent(ROOT / "examples" / "li05coo2_layered.cif")
    found = [o.structure for o in enumerate_orderings(parent, 1, 4, concentrations={"Li": 0.5})]
    by_size = {len(s): s for s in found}  # one ordering per cell size
    no_angles = Structure(Lattice.cubic(3.4), ["Au"], [[0, 0, 0]])  # no bond under 3 A
    strained = Structure(
        Lattice([[3.0, 0.1, 0.0], [0.2, 3.1, 0.0], [0.1, 0.0, 5.0]]),
        ["Li", "Co", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.26, 0.2], [0.75, 0.7, 0.8]],
    )
    return [*by_size.values(), no_angles, strained, *found[1:3]]


def assert_same(got: dict, ref: dict, forces: bool = True) -> None:
    assert float(got["e"]) == pytest.approx(float(ref["e"]), abs=1e-5)
    np.testing.assert_allclose(got["m"], ref["m"], atol=1e-5)
    np.testing.assert_allclose(got["crystal_fea"], ref["crystal_fea"], rtol=1e-5, atol=1e-4)
    if forces:
        np.testing.assert_allclose(got["f"], ref["f"], atol=1e-4)
        np.testing.assert_allclose(got["s"], ref["s"], atol=1e-3)


@pytest.mark.parametrize(("batch_size", "fused"), [(1, True), (3, False), (16, True), (16, False)])
def test_split_pass_matches_predict_structure(model, structures, batch_size, fused):
    assert supports(model)
    fast = FastCHGNet(model, fused=fused)
    if fused and fast.lib is None:
        pytest.skip("no C compiler for the fused kernels")
    refs = [model.predict_structure(s, return_crystal_feas=True) for s in structures]
    graphs = [model.graph_converter(s) for s in structures]
    got = predict_graphs(model, graphs, batch_size=batch_size, fast=fast)
    assert len(got) == len(structures)
    for g, r, s in zip(got, refs, structures, strict=True):
        assert g["f"].shape == (len(s), 3) and g["s"].shape == (3, 3)
        assert_same(g, r)
    # Energies only: the same numbers under inference_mode, no forces computed.
    for g, r in zip(predict_graphs(model, graphs, forces=False, fast=fast), refs, strict=True):
        assert "f" not in g and "s" not in g
        assert_same(g, r, forces=False)


def test_other_layouts_fall_back_to_chgnets_own_layers(model, structures):
    from chgnet.model import CHGNet

    other = CHGNet(gMLP_norm="batch", composition_model="MPtrj")  # random weights
    other.eval()
    assert not supports(other)
    with pytest.raises(ValueError, match="layout"):
        FastCHGNet(other)
    sub = structures[:3]
    got = predict_graphs(other, [other.graph_converter(s) for s in sub], batch_size=2)
    for g, s in zip(got, sub, strict=True):
        assert_same(g, other.predict_structure(s, return_crystal_feas=True))


def test_prescreen_documents_equal_the_per_structure_loop(model, structures):
    docs = chgnet_prescreen(structures, model=model, batch_size=4)
    for doc, s in zip(docs, structures, strict=True):
        ref = model.predict_structure(s, return_crystal_feas=True)
        assert doc["total_energy"] == pytest.approx(float(ref["e"]) * len(s), abs=1e-4)
        assert_same(
            {
                "e": doc["energy_per_atom"],
                "m": doc["magmoms"],
                "crystal_fea": doc["embedding"],
                "f": doc["forces"],
                "s": doc["stress"],
            },
            ref,
        )


def test_crystal_graph_equals_chgnets_converter(model, structures):
    import torch

    fields = (
        "atomic_number",
        "atom_frac_coord",
        "atom_graph",
        "neighbor_image",
        "directed2undirected",
        "undirected2directed",
        "bond_graph",
        "lattice",
    )
    for s in structures:
        ref, got = model.graph_converter(s), crystal_graph(model.graph_converter, s)
        for name in fields:
            a, b = getattr(ref, name), getattr(got, name)
            assert a.dtype == b.dtype and torch.equal(a, b), name
        assert got.atom_frac_coord.requires_grad and got.lattice.requires_grad
        assert got.composition == ref.composition
