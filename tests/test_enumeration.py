"""Enumeration of orderings from a disordered parent."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from alcampaign.enumeration import (
    EnumerationError,
    candidate_id,
    enumerate_orderings,
    load_parent,
    make_parent,
)
from alcampaign.features import ClusterVectorFeaturizer

from conftest import EXAMPLES


def test_fcc_binary_counts_match_known_numbers():
    parent = load_parent(EXAMPLES / "cuau_fcc.cif")
    assert len(parent.structure) == 1 and parent.chemical_symbols == [["Au", "Cu"]]
    # Hart & Forcade's fcc binary counts for sizes 1..4 are 2, 2, 3, 12 when a
    # structure and its Cu<->Au swap count once; with swaps distinct: 2, 2, 6, 19
    # (size 3: 3 pairs; size 4: 7 pairs + 5 self-conjugate CuAu orderings).
    counts = [len(enumerate_orderings(parent, n, n)) for n in range(1, 5)]
    assert counts == [2, 2, 6, 19]


def test_ids_are_stable_and_distinct():
    parent = load_parent(EXAMPLES / "cuau_fcc.cif")
    orderings = enumerate_orderings(parent, 1, 4)
    ids = [candidate_id(o.structure) for o in orderings]
    assert len(set(ids)) == len(ids)
    again = [candidate_id(o.structure) for o in enumerate_orderings(parent, 1, 4)]
    assert ids == again
    # The same structure translated and with its sites permuted keeps its id.
    s = orderings[5].structure.copy()
    s.translate_sites(list(range(len(s))), [0.0, 0.0, 0.0])
    s2 = Structure(s.lattice, list(reversed(s.species)), list(reversed(s.frac_coords)))
    assert candidate_id(s2) == ids[5]


def test_vacancies_and_sublattice_override():
    s = Structure(Lattice.cubic(3.0), [{"Li": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    parent = make_parent(s)
    assert parent.chemical_symbols[0] == ["Li", "X"]
    orderings = enumerate_orderings(parent, 1, 2)
    assert all("O" in o.structure.composition for o in orderings)
    assert any(o.structure.composition["Li"] == 0 for o in orderings)
    override = make_parent(s, {1: ["O", "F"]})
    assert override.chemical_symbols[1] == ["F", "O"]


def test_errors(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("this is not a CIF file\n")
    with pytest.raises(EnumerationError, match="could not read"):
        load_parent(bad)
    ordered = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
    with pytest.raises(EnumerationError, match="no disordered site"):
        make_parent(ordered)
    with pytest.raises(EnumerationError, match="site 3 does not exist"):
        make_parent(ordered, {3: ["Au", "Cu"]})
    with pytest.raises(EnumerationError, match="not an element"):
        make_parent(ordered, {0: ["Cu", "Qq"]})
    parent = load_parent(EXAMPLES / "cuau_fcc.cif")
    with pytest.raises(EnumerationError, match="max_candidates"):
        enumerate_orderings(parent, 1, 4, max_candidates=5)


def test_cluster_vectors():
    parent = load_parent(EXAMPLES / "cuau_fcc.cif")
    orderings = enumerate_orderings(parent, 1, 2)
    feat = ClusterVectorFeaturizer(parent.atoms, parent.chemical_symbols, [5.0])
    X = feat.featurize([o.atoms for o in orderings])
    assert X.shape == (len(orderings), feat.n_features)
    np.testing.assert_allclose(X[:, 0], 1.0)  # the zerolet
    # Pure elements have point-cluster correlation +1 and -1.
    pure = [i for i, o in enumerate(orderings) if len(o.structure.composition) == 1]
    assert sorted(X[pure, 1].tolist()) == [-1.0, 1.0]
