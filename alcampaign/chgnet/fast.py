"""CHGNet energies, forces, stress, magmoms and embeddings with fewer floating-point operations.

CHGNet's ``predict_structure`` spends most of its time in two places (profiled in
docs/enumeration.md): the linear layers of the gated MLPs, which run on the
concatenated features of every directed bond (atom convolution, 192 inputs) or every
angle (bond convolution and angle update, 256 inputs), and the force/stress backward
pass, which it runs twice (forces, then stress) with ``create_graph=True`` (a
second-order graph kept for training).

This module runs the same network, with the same weights, differently:

* the first linear layer of each gated MLP is split by input block. A linear map of a
  concatenation is the sum of linear maps of its parts, so the atom and bond parts are
  computed once per atom or per undirected bond and gathered, and only the angle part
  runs per angle (4x fewer multiply-adds there; 6x in the atom convolution), core and
  gate in one matrix product;
* forces and stress come from one ``torch.autograd.grad`` over the batch with
  ``create_graph=False``;
* per angle row, the first bond's and the centre atom's blocks are summed per directed
  bond first, so a row gathers two vectors instead of three; the bond weights are
  gathered to the rows once, not once per layer; gated MLP halves are taken with
  ``split`` (the gradient of two slices is two zero-filled copies);
* the last angle update is skipped: CHGNet computes it, but nothing reads its output.

The results equal CHGNet's to float32 rounding (the sums are taken in another order);
``tests/test_chgnet_fast.py`` pins them against ``predict_structure``. The network's
shape is checked first (:func:`supports`), and anything else falls back to CHGNet's own
``_compute`` with the single first-order gradient.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from alcampaign.chgnet import fused_rows

#: Conversion of eV/A^3 to GPa, as in CHGNet.
EV_A3_TO_GPA = 160.21766208


def _linear(layers: nn.Sequential) -> list[nn.Linear]:
    return [m for m in layers if isinstance(m, nn.Linear)]


def supports(model) -> bool:
    """Whether ``model`` has the layer layout the split computation reproduces."""
    from chgnet.model.layers import AngleUpdate, AtomConv, BondConv

    try:
        if model.composition_model is None or not model.mlp_first:
            return False
        for layer in model.atom_conv_layers:
            if not (type(layer) is AtomConv and layer.use_mlp_out and layer.resnet):
                return False
            if layer.atom_norm is not None or not _gated_ok(layer.twoBody_atom, 2):
                return False
        for layer in model.bond_conv_layers:
            if not (type(layer) is BondConv and layer.use_mlp_out and layer.resnet):
                return False
            if layer.bond_norm is not None or not _gated_ok(layer.twoBody_bond, 2):
                return False
        for layer in model.angle_layers:
            if not (type(layer) is AngleUpdate and layer.resnet):
                return False
            if layer.angle_norm is not None or not _gated_ok(layer.twoBody_bond, 1):
                return False
        n = model.n_conv
        return len(model.bond_conv_layers) == len(model.angle_layers) == n - 1
    except AttributeError:
        return False


def _gated_ok(g, n_linear: int) -> bool:
    core, gate = _linear(g.mlp_core.layers), _linear(g.mlp_gate.layers)
    acts = {type(m) for m in g.mlp_core.layers if not isinstance(m, nn.Linear | nn.Dropout)}
    return (
        len(core) == len(gate) == n_linear
        and all(m.bias is not None for m in core + gate)
        and isinstance(g.bn1, nn.LayerNorm)
        and isinstance(g.bn2, nn.LayerNorm)
        and isinstance(g.activation, nn.SiLU)
        and acts <= {nn.SiLU}
        and all(not m.training or m.p == 0 for m in g.modules() if isinstance(m, nn.Dropout))
    )


class _Gated:
    """A CHGNet GatedMLP with its first linear layer split into input blocks."""

    def __init__(self, g, blocks: Sequence[int]) -> None:
        core, gate = _linear(g.mlp_core.layers), _linear(g.mlp_gate.layers)
        with torch.no_grad():  # a copy of the weights, as they are now
            w = torch.cat([core[0].weight, gate[0].weight])  # [2 out, in]
            self.bias = torch.cat([core[0].bias, gate[0].bias])
            edges = [0, *itertools.accumulate(blocks)]
            self.w = [w[:, a:b].T.contiguous() for a, b in itertools.pairwise(edges)]
        self.out = core[0].weight.shape[0]
        self.second = (core[1], gate[1]) if len(core) == 2 else None
        self.bn1, self.bn2 = g.bn1, g.bn2

    def part(self, x: Tensor, i: int, bias: bool = False) -> Tensor:
        """Block ``i`` of the first layer applied to its own rows (core and gate)."""
        if bias:
            return torch.addmm(self.bias, x, self.w[i])
        return x @ self.w[i]

    def finish(self, h: Tensor) -> Tensor:
        """The rest of the gated MLP from the summed first-layer output."""
        # split, not slicing: the gradient of two slices is two zero-filled copies of h
        if self.second is None:
            core, gate = h.split(self.out, dim=1)
        else:
            core, gate = nn.functional.silu(h).split(self.out, dim=1)
            core, gate = self.second[0](core), self.second[1](gate)
        return nn.functional.silu(self.bn1(core)) * torch.sigmoid(self.bn2(gate))


def _take(x: Tensor, index: Tensor) -> Tensor:
    # index_select: its backward is an index_add_, much faster than indexing's index_put_
    return torch.index_select(x, 0, index)


def _index_add(data: Tensor, index: Tensor, n: int) -> Tensor:
    return data.new_zeros(n, data.shape[1]).index_add_(0, index, data)


class _AngleRows(NamedTuple):
    """Index tensors of a batch's angle rows (CHGNet's bond graph), built once per batch.

    A row is an angle at a centre atom between its bonds i and j. ``near`` lists the
    bonds under the bond-graph cutoff (the only ones in angles); an *arm* is a centre
    atom with one of its near bonds, i.e. a directed near bond.
    """

    i: Tensor  #: each row's bond i (undirected bond index)
    bond_j: Tensor  #: each row's bond j (undirected bond index)
    near: Tensor  #: the bonds in some angle
    j: Tensor  #: each row's bond j as a row of ``near``
    arm: Tensor  #: each row's arm (its centre atom and bond i)
    arm_atom: Tensor  #: each arm's atom
    arm_bond: Tensor  #: each arm's bond, as a row of ``near``

    @classmethod
    def of(cls, g) -> _AngleRows:
        center, i, j = g.batched_bond_graph.T.long().contiguous()
        near, local = torch.unique(torch.cat([i, j]), return_inverse=True)
        n = len(near)
        arms, arm = torch.unique(center * n + local[: len(i)], return_inverse=True)
        return cls(i, j, near, local[len(i) :], arm, arms // n, arms % n)


class FastCHGNet:
    """CHGNet's forward pass and first-order forces/stress for batches of graphs.

    Parameters
    ----------
    model
        A loaded CHGNet in eval mode, with the layout :func:`supports` accepts.
    """

    def __init__(self, model, fused: bool = True) -> None:
        if not supports(model):
            raise ValueError("this CHGNet's layer layout is not the one FastCHGNet splits")
        self.model = model
        self.lib = fused_rows.load() if fused else None
        d = model.atom_embedding.embedding.embedding_dim
        self.atom = [_Gated(c.twoBody_atom, (d, d, d)) for c in model.atom_conv_layers]
        self.bond = [_Gated(c.twoBody_bond, (d, d, d, d)) for c in model.bond_conv_layers]
        self.angle = [_Gated(c.twoBody_bond, (d, d, d, d)) for c in model.angle_layers]

    def _rows(
        self, gm: _Gated, parts, index, *, scatter=None, n_out=0, weight=None, residual=None
    ) -> Tensor:
        """``gate(first(sum of gathered parts)) [* weight]``, summed into ``n_out`` rows
        by ``scatter`` or plus a residual: the fused kernels when they are loaded, else
        the same maths in torch (equal to float32 rounding).

        ``index[k]`` picks the rows of ``parts[k]``; ``None`` takes it row by row.
        """
        if self.lib:
            n = len(next(i for i in index if i is not None))
            spec = fused_rows.Rows(self.lib, gm, n, tuple(index), scatter, n_out)
            return fused_rows.gated_rows(spec, parts, weight=weight, residual=residual)
        # the gathered parts first: an in-place sum must not start on a part itself
        gathered = [_take(x, i) for x, i in zip(parts, index, strict=True) if i is not None]
        h = gathered[0]
        for x in gathered[1:]:
            h += x
        for x, i in zip(parts, index, strict=True):
            if i is None:
                h += x
        out = gm.finish(h)
        if weight is not None:
            out = out * weight
        if scatter is not None:
            return _index_add(out, scatter, n_out)
        return out if residual is None else out + residual

    def _atom_conv(self, i, atom, bond, bond_w, edges: tuple[Tensor, ...]) -> Tensor:
        layer, gm = self.model.atom_conv_layers[i], self.atom[i]
        src, dst, d2u = edges
        # CHGNet's order: cat([center atom, bond, neighbour atom])
        parts = [gm.part(bond, 1, bias=True), gm.part(atom, 0), gm.part(atom, 2)]
        summed = self._rows(gm, parts, (d2u, src, dst), scatter=src, n_out=len(atom), weight=bond_w)
        return layer.mlp_out(summed) + atom

    @staticmethod
    def _angle_parts(gm: _Gated, atom, bond, angle, rows: _AngleRows) -> list[Tensor]:
        """First layer on cat([bond i, bond j, angle, center atom]), CHGNet's order, as
        three blocks to sum: per row (angle), per arm (bond i and centre), per bond (j).

        The bond blocks run only on the bonds under the bond-graph cutoff, and the
        first bond's and the centre atom's blocks are summed per arm before they are
        gathered to the angle rows: two gathers per row instead of three.
        """
        near = _take(bond, rows.near)
        arms = _take(gm.part(near, 0, bias=True), rows.arm_bond)
        arms = arms + _take(gm.part(atom, 3), rows.arm_atom)
        return [angle @ gm.w[2], arms, gm.part(near, 1)]

    def _bond_conv(self, i, atom, bond, pair_w, angle, rows: _AngleRows) -> Tensor:
        layer, gm = self.model.bond_conv_layers[i], self.bond[i]
        parts = self._angle_parts(gm, atom, bond, angle, rows)
        summed = self._rows(
            gm, parts, (None, rows.arm, rows.j), scatter=rows.i, n_out=len(bond), weight=pair_w
        )
        return layer.mlp_out(summed) + bond

    def _angle_update(self, i, atom, bond, angle, rows: _AngleRows) -> Tensor:
        gm = self.angle[i]
        parts = self._angle_parts(gm, atom, bond, angle, rows)
        return self._rows(gm, parts, (None, rows.arm, rows.j), residual=angle)

    def compute(self, g, magmom: bool = True) -> dict:
        """Total energies, magmoms and crystal features of a ``BatchedGraph``."""
        m = self.model
        atoms_per_graph = torch.bincount(g.atom_owners)
        atom = m.atom_embedding(g.atomic_numbers - 1)
        bond = m.bond_embedding(g.bond_bases_ag)
        edges = (*g.batched_atom_graph.long().T.contiguous(), g.directed2undirected.long())
        # The bond weights are the same in every layer: gathered to the rows once.
        bond_w = _take(m.bond_weights_ag(g.bond_bases_ag), edges[2])
        has_angles = len(g.angle_bases) != 0
        if has_angles:
            angle = m.angle_embedding(g.angle_bases)
            rows = _AngleRows.of(g)
            bond_w_bg = m.bond_weights_bg(g.bond_bases_bg)
            pair_w = _take(bond_w_bg, rows.i) * _take(bond_w_bg, rows.bond_j)
        out: dict = {"atoms_per_graph": atoms_per_graph}
        for i in range(m.n_conv - 1):
            atom = self._atom_conv(i, atom, bond, bond_w, edges)
            if has_angles:
                bond = self._bond_conv(i, atom, bond, pair_w, angle, rows)
                if i < m.n_conv - 2:  # CHGNet computes the last update but never reads it
                    angle = self._angle_update(i, atom, bond, angle, rows)
            if i == m.n_conv - 2 and magmom:
                out["m"] = torch.abs(m.site_wise(atom)).view(-1)
        atom = self._atom_conv(m.n_conv - 1, atom, bond, bond_w, edges)
        if m.readout_norm is not None:
            atom = m.readout_norm(atom)
        out["total_energy"] = m.pooling(m.mlp(atom), g.atom_owners).view(-1)
        out["crystal_fea"] = m.pooling(atom, g.atom_owners)
        return out


def predict_graphs(
    model,
    graphs: Sequence,
    *,
    forces: bool = True,
    batch_size: int = 2,
    fast: FastCHGNet | None = None,
) -> list[dict]:
    """CHGNet predictions for crystal graphs, the fields of ``predict_graph``.

    Parameters
    ----------
    model
        A loaded CHGNet; it is put in eval mode.
    graphs
        ``CrystalGraph`` objects from ``model.graph_converter``.
    forces
        Also forces (eV/A) and stress (GPa), from one first-order gradient per batch;
        without them the pass runs under ``torch.inference_mode``.
    batch_size
        Graphs per forward pass.
    fast
        The split network for ``model`` (default: built here when :func:`supports`
        accepts the model, else CHGNet's own ``_compute`` is used).

    Returns
    -------
    list of dict
        Per graph, numpy arrays: ``e`` (eV/atom), ``m`` (mu_B), ``crystal_fea`` and,
        with forces, ``f`` (eV/A) and ``s`` (GPa), as ``CHGNet.predict_graph`` gives them.
    """
    from chgnet.model.model import BatchedGraph

    model.eval()
    if fast is None and supports(model):
        fast = FastCHGNet(model)
    out: list[dict] = []
    for start in range(0, len(graphs), batch_size):
        chunk = list(graphs[start : start + batch_size])
        context = torch.enable_grad() if forces else torch.inference_mode()
        with context:
            g = BatchedGraph.from_graphs(
                chunk,
                bond_basis_expansion=model.bond_basis_expansion,
                angle_basis_expansion=model.angle_basis_expansion,
                compute_stress=forces,
            )
            if fast is not None:
                pred = fast.compute(g)
                total = pred["total_energy"]
            else:
                pred = model._compute(g, compute_magmom=True, return_crystal_feas=True)
                pred["m"] = torch.cat(pred["m"])
                total = pred["e"] * pred["atoms_per_graph"]  # _compute divided it
            n_atoms = pred["atoms_per_graph"]
            energy = (total / n_atoms + model.composition_model(chunk)).detach()
            if forces:
                grads = torch.autograd.grad(
                    total.sum(), [*g.atom_positions, *g.strains], create_graph=False
                )
                f_grads, s_grads = grads[: len(chunk)], grads[len(chunk) :]
        magmoms = pred["m"].detach().split(n_atoms.tolist())
        feas = pred["crystal_fea"].detach()
        for k in range(len(chunk)):
            doc = {
                "e": energy[k].numpy(),
                "m": magmoms[k].numpy(),
                "crystal_fea": feas[k].numpy(),
            }
            if forces:
                doc["f"] = (-f_grads[k]).numpy()
                doc["s"] = (s_grads[k] * (EV_A3_TO_GPA / g.volumes[k])).detach().numpy()
            out.append(doc)
    return out


class _Edges(NamedTuple):
    """CHGNet's graph of one structure as arrays, numbered as its C converter numbers it."""

    directed2undirected: np.ndarray  #: per directed edge (neighbour-list entry)
    undirected2directed: np.ndarray  #: per undirected edge: its first directed edge
    reverse: np.ndarray  #: per directed edge: the same bond seen from the other end
    order: np.ndarray  #: directed edges by centre atom, in the C converter's order
    degree: np.ndarray  #: directed edges per atom


def _edges(center, neighbor, image, n_atoms: int) -> _Edges | None:
    """Number CHGNet's undirected edges with array operations.

    CHGNet's C converter walks the neighbour list once: an entry whose reverse (the
    same bond seen from the other atom: centre and neighbour swapped, image negated)
    came earlier joins that entry's undirected edge, any other entry starts a new one.
    Each atom lists its directed edges grouped by neighbour atom, the groups in order of
    first appearance. ``None`` when an entry has no reverse in the list (then CHGNet's
    own converter is used).
    """
    n = len(center)
    image = np.asarray(image, dtype=np.int64)
    span = 2 * int(np.abs(image).max(initial=0)) + 1
    if n == 0 or n_atoms**2 * span**3 >= 2**62:  # nothing to number, or keys overflow
        return None

    def key(c, nb, img):
        shifted = img + span // 2
        return ((c * n_atoms + nb) * span + shifted[:, 0]) * span**2 + (
            shifted[:, 1] * span + shifted[:, 2]
        )

    keys = key(center, neighbor, image)
    by_key = np.argsort(keys, kind="stable")
    sorted_keys = keys[by_key]
    wanted = key(neighbor, center, -image)
    at = np.minimum(np.searchsorted(sorted_keys, wanted), n - 1)
    reverse = by_key[at]
    if not np.array_equal(sorted_keys[at], wanted) or np.any(reverse == np.arange(n)):
        return None
    first = np.arange(n) < reverse  # the entry that starts its undirected edge
    numbered = np.cumsum(first) - 1
    d2u = np.where(first, numbered, numbered[reverse])
    pair = center * n_atoms + neighbor
    _, first_seen, group = np.unique(pair, return_index=True, return_inverse=True)
    order = np.lexsort((np.arange(n), first_seen[group], center))
    degree = np.bincount(center, minlength=n_atoms)
    return _Edges(d2u, np.flatnonzero(first), reverse, order, degree)


def line_graph(edges: _Edges, center, distance, cutoff: float) -> np.ndarray:
    """``Graph.line_graph_adjacency_list`` with numpy, rows in the same order.

    CHGNet builds the angle list in a Python loop over every pair of bonds at an atom;
    this gathers the same rows (``[atom, undirected i, directed i, undirected j,
    directed j]``): for each undirected edge under the cutoff, in order, for each of its
    ends (its first directed edge, then the reverse), every other directed edge of that
    end's atom under the cutoff, in the atom's order.
    """
    u2d = edges.undirected2directed
    keep = distance[u2d] <= cutoff
    kept = u2d[keep]
    u_idx = np.repeat(np.flatnonzero(keep), 2)
    first = np.stack([kept, edges.reverse[kept]], axis=1).reshape(-1)
    atom = center[first]
    counts = edges.degree[atom]
    start = np.concatenate([[0], np.cumsum(edges.degree)[:-1]])
    rep = np.repeat(np.arange(len(atom)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    other = edges.order[start[atom][rep] + within]
    ok = (other != first[rep]) & (distance[other] < cutoff)
    rows = np.stack(
        [atom[rep], u_idx[rep], first[rep], edges.directed2undirected[other], other], axis=1
    )[ok]
    return rows if len(rows) else np.zeros(0, np.int64)  # CHGNet's empty list is (0,)


def crystal_graph(converter, structure):
    """``converter(structure)``, built with array operations.

    The same ``CrystalGraph`` as CHGNet's converter (pinned by a test), ~5x faster: the
    C converter makes a Python object per edge and the angle list is a Python loop.
    Converters other than CHGNet's own with its C graph algorithm are simply called.
    """
    from chgnet.graph.converter import TORCH_DTYPE, CrystalGraphConverter
    from chgnet.graph.crystalgraph import CrystalGraph

    if type(converter) is not CrystalGraphConverter or converter.algorithm != "fast":
        return converter(structure)
    n_atoms = len(structure)
    center, neighbor, image, distance = structure.get_neighbor_list(
        r=converter.atom_graph_cutoff, sites=structure.sites, numerical_tol=1e-8
    )
    center, neighbor = center.astype(np.int64), neighbor.astype(np.int64)
    edges = _edges(center, neighbor, image, n_atoms)
    if edges is None or not edges.degree.all():  # isolated atoms: CHGNet's own message
        return converter(structure)
    bond_graph = line_graph(edges, center, distance, converter.bond_graph_cutoff)
    return CrystalGraph(
        atomic_number=torch.tensor([site.specie.Z for site in structure], dtype=torch.int32),
        atom_frac_coord=torch.tensor(structure.frac_coords, dtype=TORCH_DTYPE, requires_grad=True),
        atom_graph=torch.tensor(np.stack([center, neighbor], axis=1), dtype=torch.int32),
        neighbor_image=torch.tensor(image, dtype=TORCH_DTYPE),
        directed2undirected=torch.tensor(edges.directed2undirected, dtype=torch.int32),
        undirected2directed=torch.tensor(edges.undirected2directed, dtype=torch.int32),
        bond_graph=torch.tensor(bond_graph, dtype=torch.int32),
        lattice=torch.tensor(structure.lattice.matrix, dtype=TORCH_DTYPE, requires_grad=True),
        graph_id=None,
        mp_id=None,
        composition=structure.composition.formula,
        atom_graph_cutoff=converter.atom_graph_cutoff,
        bond_graph_cutoff=converter.bond_graph_cutoff,
    )
