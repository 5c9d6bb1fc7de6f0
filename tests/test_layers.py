"""The layer rules (pyproject.toml's import-linter contracts) hold, and they bite.

Layers, lowest first: science <- config <- structures/chgnet/md <- store <- campaign <-
report <- serve <- cli. Science imports no other layer and no workflow or database
package; nothing imports the CLI; no import cycle in any package. Imports inside
functions count (import-linter reads every import statement).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["science", "structures", "chgnet", "md", "store", "campaign", "report", "serve"]


def _lint(package_root: Path, config: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``alcampaign`` found under ``package_root``."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=package_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_its_layer_contracts():
    result = _lint(ROOT, ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _fake_package(root: Path, modules: dict[str, str]) -> None:
    """A skeleton ``alcampaign`` with every layer, plus ``modules`` (dotted name: source)."""
    pkg = root / "alcampaign"
    for sub in PACKAGES:
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    for name in ("__init__", "cli", "config", "errors"):
        (pkg / f"{name}.py").write_text("")
    (root / "workflows").mkdir()
    (root / "workflows" / "__init__.py").write_text("")
    # The one known exception the contracts list must exist, or it is reported unmatched.
    (pkg / "science" / "learning.py").write_text("from alcampaign.config import X\n")
    for dotted, source in modules.items():
        path = root / (dotted.replace(".", "/") + ".py")
        path.write_text(textwrap.dedent(source))


@pytest.mark.parametrize(
    ("modules", "words"),
    [
        (  # a lazy import of the CLI from the science layer
            {"alcampaign.science.rule": "def f():\n    from alcampaign import cli\n"},
            ["alcampaign.science.rule -> alcampaign.cli"],
        ),
        (  # a store helper reaching up to the campaign layer
            {
                "alcampaign.store.facade": "import alcampaign.campaign.jobs\n",
                "alcampaign.campaign.jobs": "",
            },
            ["alcampaign.store.facade -> alcampaign.campaign.jobs"],
        ),
        (  # a ready workflow built on the CLI
            {"workflows.flow": "from alcampaign.cli import app\n"},
            ["workflows.flow -> alcampaign.cli"],
        ),
        (  # science importing a workflow package
            {"alcampaign.science.rule": "import jobflow\n"},
            ["alcampaign.science.rule -> jobflow"],
        ),
        (  # a cycle inside one layer
            {
                "alcampaign.campaign.a": "def f():\n    from alcampaign.campaign import b\n",
                "alcampaign.campaign.b": "from alcampaign.campaign import a\n",
            },
            ["No import cycle", "BROKEN"],
        ),
    ],
)
def test_the_contracts_catch_violations(tmp_path, modules, words):
    _fake_package(tmp_path, modules)
    result = _lint(tmp_path, ROOT / "pyproject.toml")
    assert result.returncode != 0, result.stdout
    for word in words:
        assert word in result.stdout, (word, result.stdout)


# The CLI, the server and the store facade keep small functions: one over this many
# lines needs its reason in a "# long: ..." comment on its first lines.
MAX_LINES = 80
THIN = ["alcampaign/cli.py", "alcampaign/serve", "alcampaign/store"]


def _long_functions(paths: list[Path], root: Path = ROOT) -> list[str]:
    import ast

    out = []
    for path in paths:
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1
            head = "\n".join(lines[node.lineno - 1 : node.lineno + 2])
            if length > MAX_LINES and "# long:" not in head:
                out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_thin_layers_have_small_functions(tmp_path):
    files = [p for t in THIN for p in sorted((ROOT / t).rglob("*.py")) or [ROOT / t]]
    assert len(files) >= 6
    assert _long_functions(files) == []
    # The check sees a long function, and accepts one with its reason.
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    bad = tmp_path / "bad.py"
    bad.write_text(f"def f():\n{body}")
    good = tmp_path / "good.py"
    good.write_text(f"def f():  # long: a table of constants\n{body}")
    assert [s.split()[1] for s in _long_functions([bad, good], tmp_path)] == ["f"]
