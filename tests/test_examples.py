"""Every usage line in examples/ runs as written.

Each `lossforge ...` command quoted in an example's comments is run through the real command line (typer's
CliRunner) from a copy of examples/, so its relative paths hold, with a smoke budget appended as extra flags (the
tiny task, 2 steps, 8 scored samples, no generation after the library seeds, no confirmation): what it would do at
full size is the example's business, that it parses, validates and runs is this test's. A line that asks for the
`openai` proposer gets a loopback OpenAI-compatible server serving the model it names (tests/openai_server.py).
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from lossforge.discovery.cli import app
from lossforge.discovery.storage.archive import Archive
from typer.testing import CliRunner

from tests.openai_server import OpenAIServer, openai_server
from tests.paths import ROOT

__all__ = ["openai_server"]  # the fixture, imported so pytest finds it

EXAMPLES = ROOT / "examples"
USAGE = re.compile(r"`(lossforge [^`]+)`")
SMOKE = {
    "run": [
        "--task",
        "tests.tiny_task:TinyTask",
        "--generations",
        "0",
        "--confirm-top",
        "0",
        "--steps",
        "2",
        "--eval-samples",
        "8",
    ],
}


def usage_lines() -> list[tuple[str, str]]:
    """(example file, command) for every `lossforge ...` quoted in a comment of a file in examples/."""
    found = []
    for path in sorted(EXAMPLES.iterdir()):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("#"):
                found += [(path.name, command) for command in USAGE.findall(line)]
    return found


def test_every_example_says_how_to_run_it() -> None:
    assert {example for example, _ in usage_lines()} == {path.name for path in EXAMPLES.iterdir()}


@pytest.mark.parametrize(("example", "command"), usage_lines())
def test_each_usage_line_runs_as_written(
    example: str,
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openai_server: Callable[..., OpenAIServer],
) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    args = shlex.split(command)[1:]
    extra = list(SMOKE[args[0]])
    if "--proposer" in args and args[args.index("--proposer") + 1] == "openai":
        server = openai_server([], models=[args[args.index("--llm-model") + 1]], api_key="sk-examples")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-examples")
        extra += ["--base-url", server.base_url]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, f"{example}: {command}\n{result.output[-3000:]}"
    out = [Path(args[args.index("--out") + 1])] if "--out" in args else list(Path("lossforge-runs").iterdir())
    assert len(out) == 1, out  # the run's directory: --out, else the default under ./lossforge-runs
    with Archive.open(out[0]) as archive:
        assert archive.get_meta("state")["status"] == "finished"
