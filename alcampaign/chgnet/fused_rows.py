"""Fused CPU kernels for the row-wise work of CHGNet's gated MLPs, with their backward.

In :mod:`alcampaign.chgnet.fast` every directed bond (atom convolution) and every angle
(bond convolution, angle update) is a *row*: its first-layer output is a sum of
gathered blocks, then ``silu`` and the second linear layers (bond and atom
convolutions), two layer norms, ``silu(core) * sigmoid(gate)``, a weight, and a
scatter-sum into atoms or bonds (or a residual, for the angle update). In torch that is
~15 operations per row block, each a pass over memory, and as many again in the
backward; after the matrix products were cut down they were most of the prescreen's
time. ``kernels/gated_rows.c`` does the gather-sum-silu, and the norm-gate-scatter, in
one pass each (and their gradients in one pass each); the matrix products stay in torch
(MKL).

The C source is compiled on first use with the system's C compiler (``-O3
-march=native -ffast-math``, ~1 s) into ``$XDG_CACHE_HOME/alcampaign/kernels`` (default
``~/.cache``), under a name that hashes the source, the flags, the compiler and this
CPU's instruction sets, so a shared home directory serves different machines safely.
Without a compiler, or with ``ALCAMPAIGN_FUSED_KERNELS=0``, :func:`load` returns
``None`` and the torch operations are used: the same numbers to float32 rounding
(``tests/test_fused_rows.py``), ~15-25% slower. Inference only: no gradients for
the weights.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "gated_rows.c"
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC")
#: Environment variable that turns the kernels off (``0``).
ENV_VAR = "ALCAMPAIGN_FUSED_KERNELS"

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SIGNATURES = {
    "rows_in_fwd": [_I, _I, _P, _P, _P, _P, _P, _P, _P, _P],
    "rows_in_bwd": [_I, _I, _P, _P, _I, _P, _I, _P, _P, _P, _P, _P, _P, _P],
    "gate_fwd": [_I, _I, _P, _I, _P, _I, _P, _P, _P, _P, _F, _P, _P, _P, _P, _P],
    "gate_bwd": [_I, _I, _P, _I, _P, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I, _P, _I, _P],
}


def _cpu_features() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [ln for ln in text.splitlines() if ln.startswith(("flags", "Features", "model name"))]
    return "\n".join(sorted(set(lines)))


def _compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` (which may carry flags), else ``cc`` or ``gcc``."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


def _build(compiler: list[str], target: Path) -> None:
    """Compile, then link without ``-ffast-math`` (linking with it can add startup code
    that flushes denormals to zero for the whole process)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "gated_rows.o", Path(tmp) / "gated_rows.so"
        for cmd in (
            [*compiler, *FLAGS, "-c", str(SOURCE), "-o", str(obj)],
            [*compiler, "-shared", str(obj), "-o", str(lib), "-lm"],
        ):
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        os.replace(lib, target)  # atomic: concurrent builders leave one whole file


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; ``None`` when they cannot be used."""
    if os.environ.get(ENV_VAR, "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        log.info("no C compiler: CHGNet rows run as torch operations")
        return None
    try:
        version = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        key = hashlib.sha256(
            "\0".join([SOURCE.read_text(), *FLAGS, version, _cpu_features()]).encode()
        ).hexdigest()[:20]
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        target = cache / "alcampaign" / "kernels" / f"gated_rows-{key}.so"
        if not target.exists():
            _build(compiler, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        log.warning("fused CHGNet kernels unavailable, using torch operations: %s", detail)
        return None
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    return lib


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(code: int) -> None:
    if code:
        raise ValueError(f"row width above the kernels' limit ({code})")


@dataclass(frozen=True)
class Rows:
    """What a block of rows gathers and where its output goes (no tensors with grad).

    ``index[k]`` picks the rows of source ``k`` (``None``: row r itself); ``scatter``
    sums each row's output into row ``scatter[r]`` of an ``n_out``-row result
    (``None``: one output row per row).
    """

    lib: ctypes.CDLL
    gated: object  # chgnet_fast._Gated: layer norms and, optionally, second layers
    n: int
    index: tuple[Tensor | None, ...]
    scatter: Tensor | None = None
    n_out: int = 0

    def __post_init__(self) -> None:
        for t in (*self.index, self.scatter):
            if t is not None and not (t.dtype == torch.int64 and t.is_contiguous()):
                raise ValueError("row indices must be contiguous int64 tensors")


class GatedRows(torch.autograd.Function):
    """``gate(first(sum of gathered sources)) [* weight]``, scattered or plus a residual.

    ``first`` is ``silu`` then the second linear layers when the gated MLP has them,
    else the identity; ``gate(h) = silu(LN_1(core)) * sigmoid(LN_2(gate))``.
    """

    @staticmethod
    def forward(ctx, rows: Rows, x0, x1, x2, weight, residual):
        lib, gm, n = rows.lib, rows.gated, rows.n
        w = x0.shape[1]
        hh = w // 2
        i0, i1, i2 = rows.index
        h = x0.new_empty(n, w)
        s = x0.new_empty(n, w) if gm.second else None
        _check(lib.rows_in_fwd(n, w, *map(_ptr, (x0, i0, x1, i1, x2, i2, h, s))))
        if gm.second:
            c, g = gm.second
            core = torch.addmm(c.bias, s[:, :hh], c.weight.T)
            gate = torch.addmm(g.bias, s[:, hh:], g.weight.T)
            strides = (hh, hh)
        else:
            core, gate, strides = h, h[:, hh:], (w, w)
        if rows.scatter is not None:
            out = x0.new_zeros(rows.n_out, hh)
        else:
            out = x0.new_empty(n, hh)
        stats = x0.new_empty(n, 4)
        bn1, bn2 = gm.bn1, gm.bn2
        _check(
            lib.gate_fwd(
                n, hh, _ptr(core), strides[0], _ptr(gate), strides[1],
                *map(_ptr, (bn1.weight, bn1.bias, bn2.weight, bn2.bias)), bn1.eps,
                *map(_ptr, (weight, residual, rows.scatter, out, stats)),
            )
        )  # fmt: skip
        ctx.rows, ctx.strides = rows, strides
        ctx.shapes = [x.shape for x in (x0, x1, x2) if x is not None]
        ctx.save_for_backward(h, core, gate, stats, weight)
        return out

    @staticmethod
    def backward(ctx, dout):
        rows, (sc, sg) = ctx.rows, ctx.strides
        lib, gm, n = rows.lib, rows.gated, rows.n
        h, core, gate, stats, weight = ctx.saved_tensors
        w = h.shape[1]
        hh = w // 2
        dout = dout.contiguous()
        dh = h.new_empty(n, w)
        if gm.second:
            dcore, dgate, strides = h.new_empty(n, hh), h.new_empty(n, hh), (hh, hh)
        else:  # the gate's input is h itself: its gradient goes straight into dh
            dcore, dgate, strides = dh, dh[:, hh:], (w, w)
        needs = ctx.needs_input_grad
        dweight = None if weight is None else h.new_empty(n, hh)
        bn1, bn2 = gm.bn1, gm.bn2
        _check(
            lib.gate_bwd(
                n, hh, _ptr(core), sc, _ptr(gate), sg,
                *map(_ptr, (bn1.weight, bn1.bias, bn2.weight, bn2.bias, stats, weight)),
                *map(_ptr, (rows.scatter, dout, dcore)), strides[0],
                _ptr(dgate), strides[1], _ptr(dweight),
            )
        )  # fmt: skip
        if gm.second:
            c, g = gm.second
            lo, hi, silu_of = dcore @ c.weight, dgate @ g.weight, h
        else:
            lo, hi, silu_of = dh, dh[:, hh:], None
        grads: list[Tensor | None] = []
        for k, shape in enumerate(ctx.shapes):
            gathered = rows.index[k] is not None and needs[1 + k]
            grads.append(h.new_zeros(shape) if gathered else None)
        grads += [None] * (3 - len(grads))
        args = []
        for k in range(3):
            args += [_ptr(rows.index[k]) if grads[k] is not None else None, _ptr(grads[k])]
        _check(
            lib.rows_in_bwd(
                n, hh, _ptr(silu_of), _ptr(lo), lo.stride(0), _ptr(hi), hi.stride(0),
                _ptr(dh), *args,
            )
        )  # fmt: skip
        for k in range(len(ctx.shapes)):  # sources taken row by row get dh itself
            if rows.index[k] is None and needs[1 + k]:
                grads[k] = dh
        dres = dout if needs[5] else None
        return None, *grads, dweight, dres


def gated_rows(
    rows: Rows,
    sources: list[Tensor],
    weight: Tensor | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    """Apply :class:`GatedRows` to two or three contiguous float32 sources."""
    x = [s.contiguous() for s in sources] + [None] * (3 - len(sources))
    w = None if weight is None else weight.contiguous()
    res = None if residual is None else residual.contiguous()
    return GatedRows.apply(rows, *x, w, res)
