"""The check's verdicts are computed where the candidate never ran, and that process holds no secret.

Each test runs a hostile candidate with the static policy off (only the process separation and the OS layer
stand) and fails on a checker that judges inside the candidate's process or forks it from a process that
held the user's keys (seen failing on main 8d4392a: the verdict forgery passed, the environment leaked).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lossforge.evaluate.checking.checker import check

from tests.paths import HOSTILE

SECRETS = {"OPENAI_API_KEY": "sk-test-secret-123", "HF_TOKEN": "hf_secret_456"}

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-specific")


def hostile(name: str) -> str:
    return (HOSTILE / f"{name}.py").read_text(encoding="utf-8")


def test_a_candidate_cannot_forge_the_learning_signal_verdict() -> None:
    report = check(hostile("forge_verdict"), fmt="python", static_policy=False)
    assert not report.passed and report.stage == "sandbox"
    assert "no learning signal at initialization" in report.errors[0] and "would lower it" in report.errors[0]


def test_garbage_in_the_answer_pipe_rejects_the_candidate_without_crashing_the_checker() -> None:
    report = check(hostile("garbage_answers"), fmt="python", static_policy=False)
    assert not report.passed and report.stage == "sandbox" and report.profile is None
    assert "sandbox process" in report.errors[0], report.errors


def _check_cli(name: str, tmp_path: Path) -> tuple[dict[str, object], str]:
    """``lossforge check --no-static-policy --json`` in a fresh process whose environment holds the secrets,
    so it starts its own fork server from that environment."""
    env = {**os.environ, **SECRETS}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lossforge.discovery.cli import main; main()",
            "check",
            str(HOSTILE / f"{name}.py"),
            "--no-static-policy",
            "--json",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    return json.loads(done.stdout.splitlines()[0]), done.stdout + done.stderr


def test_the_environment_a_candidate_reads_holds_no_secret(tmp_path: Path) -> None:
    report, output = _check_cli("environ_in_profile", tmp_path)
    assert report["passed"] is True
    curves = report["profile"]["curves"]  # type: ignore[index]
    at_zero = curves["loss"]["0.1"][curves["rho"].index(0.0)]
    assert at_zero == pytest.approx(math.log(2), abs=1e-12)  # DPO at rho = 0 plus the leaked length: 0
    assert not any(secret in output for secret in SECRETS.values())


def test_no_secret_leaves_through_an_error_message(tmp_path: Path) -> None:
    report, output = _check_cli("environ_in_error", tmp_path)
    assert report["passed"] is False and "raised ValueError" in report["errors"][0]  # type: ignore[index]
    assert not any(secret in output for secret in SECRETS.values())


def test_a_child_that_writes_into_the_fork_servers_pipes_does_not_stop_later_runs() -> None:
    from multiprocessing import forkserver

    check(hostile("forge_verdict"), fmt="python", static_policy=False)  # the server runs
    server = forkserver._forkserver._forkserver_pid
    first = check(hostile("service_pipes"), fmt="python", static_policy=False)
    assert first.passed  # it is DPO, and its writes went nowhere
    for _ in range(3):
        again = check(hostile("forge_verdict"), fmt="python", static_policy=False)
        assert not again.passed and "no learning signal" in again.errors[0]
    assert forkserver._forkserver._forkserver_pid == server  # the same server: nothing stopped it
