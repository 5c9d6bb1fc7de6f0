"""The fused row kernels (alcampaign.chgnet.fused_rows) against the same maths in torch.

Each configuration the CHGNet pass uses is checked, values and gradients: atom
convolution (three gathered sources, second layers, weight, scatter into atoms), bond
convolution (one source per row and two gathered, second layers, weight, scatter into
bonds) and angle update (no second layers, a residual, one output per row).
"""

import pytest
import torch

from alcampaign.chgnet import fused_rows
from alcampaign.chgnet.fast import FastCHGNet
from alcampaign.chgnet.prescreen import load_chgnet


@pytest.fixture(scope="module")
def fast():
    fast = FastCHGNet(load_chgnet())
    if fast.lib is None:
        pytest.skip("no C compiler for the fused kernels")
    return fast


def reference(gm, sources, index, weight, residual, scatter, n_out):
    h = sum(x if i is None else x[i] for x, i in zip(sources, index, strict=False))
    out = gm.finish(h)
    if weight is not None:
        out = out * weight
    if scatter is not None:
        return out.new_zeros(n_out, out.shape[1]).index_add(0, scatter, out)
    return out + residual if residual is not None else out


def case(kind: str, n: int = 300):
    """Random sources, indices, weight/residual for one configuration."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (2 * torch.rand(*shape, generator=g) - 1).requires_grad_()

    def idx(high):
        return torch.randint(0, high, (n,), generator=g)

    if kind == "atom":  # rows = directed bonds: bond, centre atom, neighbour atom
        sources, index = [rand(40, 128), rand(12, 128), rand(12, 128)], (idx(40), idx(12), idx(12))
        return sources, index, rand(n, 64), None, idx(12), 12
    if kind == "bond":  # rows = angles: the angle's own block, arm, bond j
        sources, index = [rand(n, 128), rand(50, 128), rand(30, 128)], (None, idx(50), idx(30))
        return sources, index, rand(n, 64), None, idx(30), 30
    sources, index = [rand(n, 128), rand(50, 128), rand(30, 128)], (None, idx(50), idx(30))
    return sources, index, None, rand(n, 64), None, 0


@pytest.mark.parametrize("kind", ["atom", "bond", "angle"])
def test_fused_rows_match_torch_values_and_gradients(fast, kind):
    gm = {"atom": fast.atom[1], "bond": fast.bond[1], "angle": fast.angle[1]}[kind]
    sources, index, weight, residual, scatter, n_out = case(kind)
    leaves = [*sources, *(t for t in (weight, residual) if t is not None)]
    ref = reference(gm, sources, index, weight, residual, scatter, n_out)
    rows = fused_rows.Rows(
        fast.lib, gm, len(index[0] if index[0] is not None else sources[0]), index, scatter, n_out
    )
    got = fused_rows.gated_rows(rows, sources, weight=weight, residual=residual)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    probe = torch.rand(ref.shape, generator=torch.Generator().manual_seed(1))
    want = torch.autograd.grad((ref * probe).sum(), leaves)
    have = torch.autograd.grad((got * probe).sum(), leaves)
    for a, b in zip(have, want, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_indices_must_be_contiguous_int64(fast):
    with pytest.raises(ValueError, match="int64"):
        fused_rows.Rows(fast.lib, fast.angle[0], 3, (None, torch.arange(3, dtype=torch.int32)))


def test_kernels_build_into_the_cache_or_step_aside(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fused_rows.load.cache_clear()
    try:
        monkeypatch.setenv(fused_rows.ENV_VAR, "0")
        assert fused_rows.load() is None
        fused_rows.load.cache_clear()
        monkeypatch.delenv(fused_rows.ENV_VAR)
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        assert fused_rows.load() is None  # a warning, and torch operations instead
        fused_rows.load.cache_clear()
        monkeypatch.delenv("CC")
        if fused_rows._compiler() is None:
            pytest.skip("no C compiler")
        assert fused_rows.load() is not None
        built = list((tmp_path / "alcampaign" / "kernels").glob("gated_rows-*.so"))
        assert len(built) == 1  # and nothing half-written beside it
        assert [p.name for p in built[0].parent.iterdir()] == [built[0].name]
    finally:
        fused_rows.load.cache_clear()
