"""Every shell command of README.md and docs/*.md, run as a new user types it.

Each fenced block marked ``bash``, ``sh``, ``shell`` or ``console`` is one test (id
``FILE:LINE``); its commands run one by one, exactly as written, with ``bash -c`` (a
command that spans lines, with ``\\`` or an open loop, runs as one). Within a document
the blocks share one fresh ``$ALCAMPAIGN_HOME`` and one working folder and run in
document order, so ``run`` -> ``status`` -> ``report`` chain as in the text; a block run
alone (``-k``) first runs the blocks before it. Each command must exit 0, and what the
docs promise about its output is checked (:data:`CHECKS`: ``status --json`` keys, the
report's files and plots, the export's manifest, ...).

The working folder mirrors the repository root (a symbolic link to each top-level entry,
and ``.venv`` to this interpreter's environment), so ``examples/...``, ``stores/...`` and
``source .venv/bin/activate`` work as in a checkout, while what the commands write
(``report/``, ``questions/``, ...) stays out of it. ``PATH`` starts with this
interpreter's ``bin`` (``alcampaign`` is this checkout's, also through ``PYTHONPATH``).

A comment just before a block says how to treat it:

* ``<!-- docs-test: skip REASON -->``: not run (a cluster, a MongoDB server, installing
  the environment); the test is reported as skipped with the reason;
* ``<!-- docs-test: slow -->``: a ``slow`` test (minutes);
* ``<!-- docs-test: server URL -->``: each command is a server: it must answer ``URL``
  (HTTP 200), then it is interrupted (Ctrl-C) and must exit 0.

Usage synopses (``alcampaign report NAME --out DIR [--baseline OTHER]``) are ``text``
blocks: placeholders are not commands. The campaigns the docs run are the examples,
scaled down by the ``--set`` options written in the docs. Measured on the shared 2-core
build machine under heavy load (load average 12-19), two runs: 17-26 minutes of wall
time, 4.5-6 minutes of CPU time for the default tests (the README's walk-through ~35% of
it, the external oracle's round trip ~45%, the short MD ~7%).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
MARK = re.compile(r"<!--\s*docs-test:\s*(skip|slow|server)\b\s*(.*?)\s*-->")
NOT_MIRRORED = {".git", ".venv", "report", ".alcampaign", ".pytest_cache", ".ruff_cache"}
COMMAND_TIMEOUT = 900  # s: one command (the longest, a scaled-down campaign, takes ~1 min)


@dataclass
class Block:
    """A shell block of a document."""

    doc: Path
    line: int  # of the opening fence, from 1
    text: str
    mark: str | None = None
    detail: str = ""

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def commands(self) -> list[str]:
        return split_commands(self.text)


def shell_blocks(path: Path) -> list[Block]:
    """The shell blocks of a Markdown file, with the marker comment just before each."""
    lines = path.read_text().splitlines()
    out, i, previous = [], 0, ""
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        indent, lang, start = len(m.group(1)), m.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
            i += 1
        i += 1  # the closing fence
        if lang in SHELLS:
            text = "\n".join(body)
            if lang == "console":  # keep the prompted lines, not the shown output
                text = "\n".join(b[2:] for b in body if b.startswith("$ "))
            mark = MARK.search(previous)
            out.append(
                Block(path, start + 1, text, *(mark.groups() if mark else (None, "")))
            )
        previous = ""
    return out


def split_commands(text: str) -> list[str]:
    """Complete shell commands of a block: lines joined while they end in ``\\`` or do
    not parse on their own yet (``bash -n``: an open loop, quote or ``if``)."""
    commands, current = [], []
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current.append(line)
        if line.rstrip().endswith("\\"):
            continue
        joined = "\n".join(current)
        if subprocess.run(["bash", "-n", "-c", joined], capture_output=True).returncode == 0:
            commands.append(joined)
            current = []
    if current:
        commands.append("\n".join(current))  # runs, and fails with bash's own message
    return commands


ALL_BLOCKS = [b for doc in DOCUMENTS for b in shell_blocks(doc)]


# -- what the docs promise -------------------------------------------------------------

STATUS_KEYS = {"name", "state", "iteration", "n_oracle_calls", "stop_reason", "metrics", "criteria"}
METRIC_KEYS = {"rmse", "mae", "ece", "max_std_residual"}
REPORT_PLOTS = {  # README: "learning curve, parity, calibration, error vs uncertainty, ..."
    "learning_curve",
    "parity",
    "calibration",
    "error_vs_uncertainty",
    "convex_hull",
    "acquisitions",
    "coverage_diversity",
    "cost",
}


def _check_status_json(m: re.Match, out: str, cwd: Path) -> None:
    rec = json.loads(out)
    assert STATUS_KEYS <= set(rec), f"status --json lacks {STATUS_KEYS - set(rec)}"
    assert METRIC_KEYS <= set(rec["metrics"])
    assert rec["state"] in ("running", "stopped", "failed", "waiting", "enumerated")
    for c in rec["criteria"]:
        assert {"name", "value", "threshold", "met"} <= set(c)


def _check_report(m: re.Match, out: str, cwd: Path) -> None:
    folder = cwd / m.group(2)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["name"] == m.group(1)
    assert (folder / "index.html").read_text().count("<img") == len(summary["plots"])
    if summary["state"] == "stopped":  # a finished campaign has every plot
        assert {p.removesuffix(".png") for p in summary["plots"]} == REPORT_PLOTS
    for png in summary["plots"]:
        assert (folder / png).read_bytes()[:4] == b"\x89PNG"


def _check_export(m: re.Match, out: str, cwd: Path) -> None:
    if "no open questions" in out:
        return
    manifest = json.loads((cwd / m.group(2) / "manifest.json").read_text())
    assert manifest["questions"], "the manifest lists no question"
    for q in manifest["questions"]:
        assert (cwd / m.group(2) / q["file"]).exists()
        assert {"candidate_id", "campaign", "fidelity", "formula"} <= set(q)


def _check_run(m: re.Match, out: str, cwd: Path) -> None:
    assert "stopped" in out or "waits for external answers" in out, out[-2000:]


def _check_query(m: re.Match, out: str, cwd: Path) -> None:
    if m.group(1) == "json":
        rows = json.loads(out)
        assert rows and all("candidate_id" in r for r in rows)
    elif m.group(1) == "csv":
        assert out.splitlines()[0].startswith("candidate_id,")


def _check_enumerate(m: re.Match, out: str, cwd: Path) -> None:
    assert re.search(r"\d+ structures enumerated", out) and "CHGNet energy range" in out


def _check_ingest(m: re.Match, out: str, cwd: Path) -> None:
    assert re.search(r"stored \d+ answers", out), out


def _check_written(m: re.Match, out: str, cwd: Path) -> None:
    assert (cwd / m.group(1)).stat().st_size > 0


CHECKS = [
    (re.compile(r"alcampaign status \S+ --json\s*$"), _check_status_json),
    (re.compile(r"alcampaign report (\S+) --out (\S+)"), _check_report),
    (re.compile(r"alcampaign export (\S+) --out (\S+)"), _check_export),
    (re.compile(r"alcampaign (?:run|md) "), _check_run),
    (re.compile(r"alcampaign query .*--format (json|csv)"), _check_query),
    (re.compile(r"alcampaign enumerate "), _check_enumerate),
    (re.compile(r"alcampaign ingest "), _check_ingest),
    (re.compile(r"emt_answers\.py \S+ --out (\S+)"), _check_written),
]


# -- running ---------------------------------------------------------------------------


@dataclass
class DocSession:
    """One document's home, working folder and the blocks run so far."""

    doc: Path
    root: Path
    attempted: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.cwd = self.root / "work"
        self.cwd.mkdir(parents=True)
        for entry in ROOT.iterdir():
            if entry.name not in NOT_MIRRORED:
                (self.cwd / entry.name).symlink_to(entry)
        (self.cwd / ".venv").symlink_to(Path(sys.prefix))
        self.env = {
            **os.environ,
            "ALCAMPAIGN_HOME": str(self.root / "home"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            "MPLBACKEND": "Agg",
            "COLUMNS": "120",
        }

    def run_through(self, block: Block) -> None:
        """Run the blocks of the document before ``block`` not run yet, then ``block``."""
        for earlier in ALL_BLOCKS:
            if earlier.doc != self.doc or earlier.line > block.line:
                continue
            if earlier.line in self.attempted or earlier.mark in ("skip", "slow"):
                if earlier is not block:
                    continue
            self.attempted.add(earlier.line)
            for command in earlier.commands:
                if earlier.mark == "server":
                    self.serve(command, earlier.detail)
                else:
                    self.run(command, earlier.id)

    def run(self, command: str, where: str) -> None:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"{where}: `{command}` exited {result.returncode}:\n{output[-4000:]}"
        )
        for pattern, check in CHECKS:
            m = pattern.search(command)
            if m:
                check(m, result.stdout, self.cwd)

    def serve(self, command: str, url: str) -> None:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            deadline, answered = time.monotonic() + 120, False
            while not answered and time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        answered = response.status == 200
                except OSError:
                    time.sleep(0.5)
            assert answered, f"`{command}` did not answer {url}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            output = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{output[-4000:]}"


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    made: dict[Path, DocSession] = {}

    def get(doc: Path) -> DocSession:
        if doc not in made:
            made[doc] = DocSession(doc, tmp_path_factory.mktemp(doc.stem))
        return made[doc]

    return get


def _param(block: Block):
    marks = [pytest.mark.slow] if block.mark == "slow" else []
    return pytest.param(block, id=block.id, marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in ALL_BLOCKS])
def test_documented_commands(block: Block, sessions):
    if block.mark == "skip":
        pytest.skip(f"{block.id} not run here: {block.detail}")
    sessions(block.doc).run_through(block)


# -- the extraction itself ---------------------------------------------------------------


def test_every_shell_block_is_found_and_marked_blocks_say_why(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n<!-- docs-test: skip needs a cluster -->\n```bash\nsbatch job.sh\n```\n"
        "```yaml\na: 1\n```\n"
        "1. step\n\n   ```sh\n   alcampaign run x.yaml \\\n       --name y  # note\n"
        "   for i in 1 2; do\n     echo $i\n   done\n   ```\n"
        "```console\n$ alcampaign status\nshown output\n```\n"
    )
    found = shell_blocks(doc)
    assert [(b.line, b.mark, b.detail) for b in found] == [
        (4, "skip", "needs a cluster"),
        (12, None, ""),
        (19, None, ""),
    ]
    assert found[1].commands == [
        "alcampaign run x.yaml \\\n    --name y  # note",
        "for i in 1 2; do\n  echo $i\ndone",
    ]
    assert found[2].commands == ["alcampaign status"]
    for b in ALL_BLOCKS:  # every skip in the real docs gives its reason
        assert b.mark != "skip" or len(b.detail) > 10, b.id
