"""Every file that ships is installed: a wheel built from the repository, installed
into a fresh virtual environment, holds every module and the C kernel source, and runs
the fused CHGNet path from there (the kernel compiled from the installed source).

No network: the wheel is built without build isolation and installed without its
dependencies, which the fresh environment sees through a ``.pth`` file naming this
environment's site-packages.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from alcampaign.chgnet import fused_rows

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Run inside the fresh environment: the package comes from there, the kernel builds
# from the installed source, and the fused pass gives CHGNet's own energy.
PROBE = """
import sys
from pathlib import Path
import alcampaign
from alcampaign.chgnet import fused_rows
from alcampaign.chgnet.fast import FastCHGNet, predict_graphs
from alcampaign.chgnet.prescreen import load_chgnet
from pymatgen.core import Lattice, Structure

venv = Path(sys.argv[1]).resolve()
assert venv in Path(alcampaign.__file__).resolve().parents, alcampaign.__file__
assert venv in fused_rows.SOURCE.resolve().parents and fused_rows.SOURCE.is_file()
assert fused_rows.load() is not None, "the fused kernels did not build"
model = load_chgnet()
fast = FastCHGNet(model, fused=True)
assert fast.lib is not None
s = Structure(Lattice.cubic(3.6), ["Cu", "Au", "Cu", "Cu"],
              [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
got = predict_graphs(model, [model.graph_converter(s)], forces=False, fast=fast)[0]
ref = model.predict_structure(s)
assert abs(float(got["e"]) - float(ref["e"])) < 1e-4, (got["e"], ref["e"])
print("fused ok", float(got["e"]))
"""


def _copy_sources(dest: Path) -> None:
    """What a build needs from the repository: the project file, the readme and the
    package (no caches, no build leftovers)."""
    shutil.copy2(ROOT / "pyproject.toml", dest)
    shutil.copy2(ROOT / "README.md", dest)
    shutil.copytree(
        ROOT / "alcampaign",
        dest / "alcampaign",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"),
    )


def _shipped(root: Path) -> set[str]:
    """Paths (relative to ``root``) of the package's modules and kernel sources."""
    return {
        p.relative_to(root).as_posix()
        for p in (root / "alcampaign").rglob("*")
        if p.suffix in (".py", ".c") and "__pycache__" not in p.parts
    }


def test_wheel_installs_every_file_and_runs_the_fused_path(tmp_path):
    if fused_rows._compiler() is None:
        pytest.skip("no C compiler for the fused kernels")
    src = tmp_path / "src"
    src.mkdir()
    _copy_sources(src)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(dist), str(src)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (wheel,) = dist.glob("alcampaign-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _shipped(src) - names
    assert not missing, f"files left out of the wheel: {sorted(missing)}"
    assert "alcampaign/chgnet/kernels/gated_rows.c" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Installed before the dependencies are made visible, so pip sees a bare venv.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    # The dependencies: this environment's site-packages, appended after the venv's
    # own (a path line in a .pth file; the .pth files there are not run, so an
    # editable install of alcampaign in this environment stays invisible).
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "outer_site.pth").write_text("\n".join(sorted(ours)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(python), "-c", PROBE, str(venv)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fused ok" in result.stdout
    assert list((tmp_path / "cache" / "alcampaign" / "kernels").glob("gated_rows-*.so"))
