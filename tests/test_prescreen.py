"""CHGNet prescreen against CHGNet's own per-structure predictions."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from alcampaign.chgnet.prescreen import chgnet_prescreen, load_chgnet


@pytest.fixture(scope="module")
def model():
    return load_chgnet()


def test_batched_prescreen_matches_per_structure_predictions(model):
    structures = [
        Structure(
            Lattice.cubic(3.6),
            ["Cu", "Au", "Cu", "Au"],
            [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        ),
        Structure(Lattice.cubic(2.9), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.52, 0.5]]),
        Structure(
            Lattice.cubic(4.2),
            ["Li", "Co", "O", "O"],
            [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.75, 0.7, 0.75]],
        ),
    ]
    out = chgnet_prescreen(structures, model=model, batch_size=2, forces=True)
    for s, doc in zip(structures, out, strict=True):
        ref = model.predict_structure(s)
        assert doc["energy_per_atom"] == pytest.approx(float(ref["e"]), abs=1e-5)
        assert doc["total_energy"] == pytest.approx(float(ref["e"]) * len(s), abs=1e-4)
        np.testing.assert_allclose(doc["forces"], ref["f"], atol=1e-4)
        np.testing.assert_allclose(doc["stress"], ref["s"], atol=1e-3)
        np.testing.assert_allclose(doc["magmoms"], ref["m"], atol=1e-4)
        assert len(doc["embedding"]) == 64 and doc["model_version"] == "0.3.0"
    # Forces are off the hot path when not asked for.
    assert "forces" not in chgnet_prescreen(structures[:1], model=model, forces=False)[0]
    assert chgnet_prescreen([], model=model) == []


def test_relaxation_and_worker_processes(model):
    structures = [
        Structure(
            Lattice.cubic(3.7),
            ["Cu", "Au", "Cu", "Au"],
            [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        ),
        Structure(
            Lattice.cubic(3.6),
            ["Cu"] * 4,
            [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.55]],
        ),
        Structure(
            Lattice.cubic(4.0), ["Au"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
        ),
    ]
    relaxed = chgnet_prescreen(structures[:2], model=model, forces=False, relax_steps=20)
    for doc in relaxed:
        assert doc["relaxed"]["energy_per_atom"] <= doc["energy_per_atom"] + 1e-4
        assert 1 <= doc["relaxed"]["steps"] <= 21
    # Workers take the largest structures first; the results come back in input order.
    mixed = [*structures, structures[1] * (2, 1, 1)]
    serial = chgnet_prescreen(mixed, model=model)
    parallel = chgnet_prescreen(mixed, workers=2)
    for a, b in zip(serial, parallel, strict=True):
        assert a["energy_per_atom"] == pytest.approx(b["energy_per_atom"], abs=1e-5)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-5)


def test_unknown_element_is_refused(model):
    from alcampaign.chgnet.prescreen import check_elements

    check_elements(["Li", "Co", "O"], model)
    with pytest.raises(ValueError, match="Og"):
        check_elements(["Li", "Og"], model)


def test_forked_workers_use_the_callers_model(model):
    import copy

    import torch

    mine = copy.deepcopy(model)
    with torch.no_grad():
        last = [m for m in mine.mlp.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias += 1.0  # +1 eV per atom
    structures = [
        Structure(
            Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
        )
        * (1, 1, k)
        for k in (1, 2, 3)
    ]
    packaged = chgnet_prescreen(structures, model=model, forces=False, workers=1)
    parallel = chgnet_prescreen(structures, model=mine, forces=False, workers=2)
    for a, b in zip(packaged, parallel, strict=True):
        assert b["energy_per_atom"] == pytest.approx(a["energy_per_atom"] + 1.0, abs=1e-4)
