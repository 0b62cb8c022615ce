"""`lossforge check`: exit codes 0/1/2, JSON lines on stdout only, and hostile candidates in a real process."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from lossforge.candidates import BUILTIN_DIR
from lossforge.discovery.cli import app
from typer.testing import CliRunner

from tests.paths import HOSTILE

JSON_KEYS = {"path", "passed", "stage", "errors", "warnings", "profile", "fingerprint", "name", "isolation"}
REPLY = {"thought": "t", "name": "n", "code": (BUILTIN_DIR / "dpo.py").read_text(encoding="utf-8")}


def test_passing_candidates_exit_0(tmp_path: Path) -> None:
    reply = tmp_path / "reply.json"
    reply.write_text(json.dumps(REPLY), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(BUILTIN_DIR / "ipo.py"), str(reply)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("PASS") == 2


def test_rejection_exits_1_and_prints_json_lines(tmp_path: Path) -> None:
    malformed = tmp_path / "malformed.json"
    malformed.write_text("the model rambled and sent no JSON", encoding="utf-8")
    result = CliRunner().invoke(app, ["check", "--json", str(BUILTIN_DIR / "dpo.py"), str(malformed)])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(line) for line in lines] == [JSON_KEYS, JSON_KEYS]
    assert (lines[0]["passed"], lines[0]["stage"]) == (True, "ok")
    assert (lines[1]["passed"], lines[1]["stage"]) == (False, "parse")
    assert "no JSON object" in lines[1]["errors"][0]


def test_readable_summary_names_the_stage_and_error() -> None:
    result = CliRunner().invoke(app, ["check", str(HOSTILE / "torch_load.py")])
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "stage 'static'" in result.stdout and "`.load` is not allowed" in result.stdout


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.py"
    latin1.write_bytes("NAME = 'caf\xe9'\n".encode("latin-1"))
    other = tmp_path / "notes.txt"
    other.write_text("hello", encoding="utf-8")
    cases = {
        str(tmp_path / "missing.py"): "no such file",
        str(latin1): "not UTF-8",
        str(other): "expected a .py candidate or a .json LLM reply",
    }
    for path, message in cases.items():
        result = CliRunner().invoke(app, ["check", "--json", str(BUILTIN_DIR / "dpo.py"), path])
        assert result.exit_code == 2
        assert result.stdout == ""  # nothing was checked
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_hostile_candidates_in_a_real_process(tmp_path: Path) -> None:
    """Each is rejected with a reason, leaves nothing on disk, connects nowhere, and returns in time."""
    inputs, workdir = tmp_path / "inputs", tmp_path / "work"
    inputs.mkdir()
    workdir.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        for fixture in sorted(HOSTILE.glob("*.py")):
            text = fixture.read_text(encoding="utf-8").replace('("127.0.0.1", 1)', f'("127.0.0.1", {port})')
            (inputs / fixture.name).write_text(text, encoding="utf-8")
        paths = sorted(str(p) for p in inputs.glob("*.py"))
        start = time.perf_counter()
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                "from lossforge.discovery.cli import main; main()",
                "check",
                "--json",
                "--timeout",
                "3",
                *paths,
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        elapsed = time.perf_counter() - start
        accepted = []
        try:
            accepted.append(listener.accept())
        except BlockingIOError:
            pass
    assert completed.returncode == 1, completed.stderr[-2000:]
    reports = [json.loads(line) for line in completed.stdout.splitlines()]  # stdout holds only JSON
    assert len(reports) == len(paths)
    for report in reports:
        assert report["passed"] is False and report["errors"], report
        assert report["stage"] in ("static", "sandbox")
    assert list(workdir.iterdir()) == []  # no file written, no marker of a started process
    assert accepted == []
    assert elapsed < 10 + 3 * len(paths)  # start-up plus at most one timeout per candidate
    shutil.rmtree(inputs)
