"""Enumeration of orderings from a disordered parent."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from alcampaign.science.features import ClusterVectorFeaturizer
from alcampaign.structures.enumeration import (
    EnumerationError,
    candidate_id,
    enumerate_orderings,
    load_parent,
    make_parent,
)

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


def test_layered_oxide_li_vacancy_counts_and_filters():
    from alcampaign.structures.enumeration import apply_occupancies

    parent = load_parent(EXAMPLES / "li05coo2_layered.cif")
    assert len(parent.structure) == 4 and parent.chemical_symbols[0] == ["Li", "X"]
    assert parent.oxidation_states == {"Li": 1.0, "Co": 3.0, "O": -2.0}
    half = enumerate_orderings(parent, 1, 6, concentrations={"Li": 0.5})
    for o in half:
        comp = o.structure.composition
        assert comp["Li"] / comp["Co"] == pytest.approx(0.5)
    wide = enumerate_orderings(parent, 1, 6, concentrations={"Li": 0.5}, tolerance=0.2)
    assert len(wide) > len(half)
    # With fixed Co3+ only the fully lithiated cell is neutral.
    neutral = enumerate_orderings(parent, 1, 4, charge_balanced=True)
    assert [o.structure.composition.reduced_formula for o in neutral] == ["LiCoO2"]
    # A deterministic cap: smallest cells first, then by id, whatever the order.
    kept = enumerate_orderings(parent, 1, 6, concentrations={"Li": 0.5}, keep=5)
    assert [o.size for o in kept] == sorted(o.size for o in kept)
    again = enumerate_orderings(parent, 1, 6, concentrations={"Li": 0.5}, keep=5)
    assert [candidate_id(o.structure) for o in kept] == [candidate_id(o.structure) for o in again]
    # Occupancy override: Li at 0.25 instead of 0.5 on every Li site.
    full = Structure.from_file(EXAMPLES / "li05coo2_layered.cif")
    quarter = apply_occupancies(full, {"Li": {"Li+": 0.25}})
    assert quarter.composition["Li"] / quarter.composition["Co"] == pytest.approx(0.25)
    with pytest.raises(EnumerationError, match="sum"):
        apply_occupancies(full, {"Li": {"Li+": 0.7, "Na+": 0.6}})
    with pytest.raises(EnumerationError, match="no site holds"):
        apply_occupancies(full, {"Fe": {"Fe2+": 0.5}})


def test_spinel_charge_balance_equals_half_lithiation():
    parent = load_parent(EXAMPLES / "li05mn2o4_spinel.cif")
    assert len(parent.structure) == 14 and parent.oxidation_states["Mn"] == 3.75
    by_charge = enumerate_orderings(parent, 1, 3, charge_balanced=True)
    by_conc = enumerate_orderings(parent, 1, 3, concentrations={"Li": 0.5})
    assert sorted(candidate_id(o.structure) for o in by_charge) == sorted(
        candidate_id(o.structure) for o in by_conc
    )


def test_filter_errors():
    parent = load_parent(EXAMPLES / "cuau_fcc.cif")
    with pytest.raises(EnumerationError, match="oxidation state"):
        enumerate_orderings(parent, 1, 2, charge_balanced=True)
    with pytest.raises(EnumerationError, match="on no site"):
        enumerate_orderings(parent, 1, 2, concentrations={"Li": 0.5})
    with pytest.raises(EnumerationError, match="empty"):
        enumerate_orderings(parent, 1, 2, concentrations={"Au": 0.3})
    with pytest.raises(EnumerationError, match="backend"):
        enumerate_orderings(parent, 1, 2, backend="magic")


def test_occupancy_above_one_in_the_file(tmp_path):
    text = (
        (EXAMPLES / "cuau_fcc.cif")
        .read_text()
        .replace("Au1  Au  0.0  0.0  0.0  0.5", "Au1  Au  0.0  0.0  0.0  0.9")
    )
    bad = tmp_path / "over.cif"
    bad.write_text(text)
    with pytest.raises(EnumerationError, match=r"occupancies summing to 1\.40"):
        load_parent(bad)


@pytest.mark.skipif(__import__("shutil").which("enum.x") is None, reason="enumlib's enum.x absent")
def test_enumlib_backend_matches_icet_counts():
    parent = load_parent(EXAMPLES / "cuau_fcc.cif")
    assert len(enumerate_orderings(parent, 1, 4, backend="enumlib")) == len(
        enumerate_orderings(parent, 1, 4)
    )


def test_resolve_backend():
    from alcampaign.structures.enumeration import resolve_backend

    oxide = load_parent(EXAMPLES / "li05coo2_layered.cif")
    assert resolve_backend("auto", oxide) == "icet"  # vacancies: icet whatever is installed
    assert resolve_backend("enumlib", oxide) == "enumlib"
