"""`lossforge confirm`: exit codes 0 (done), 1 (nothing could be confirmed), 2 (bad input) with one line each,
``--json`` results one per line and nothing else on stdout; the run's lock is held while it confirms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lossforge.discovery.storage.run_lock import RunLock

from tests.noisy_scores import run
from tests.paths import ROOT

CLI = [sys.executable, "-c", "from lossforge.discovery.cli import main; main()", "confirm"]


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run whose end-of-run confirmation is archived (2 candidates, hinge, dpo x 3 held-out seeds)."""
    base = tmp_path_factory.mktemp("confirm-cli")
    previous = os.environ.get("LOSSFORGE_CACHE")
    os.environ["LOSSFORGE_CACHE"] = str(base / "cache")  # noisy scores never reach a real cache
    try:
        run(
            {
                "plan": {1: [("strong", 0.2, 0.1), ("even", 0.0, 0.2)]},
                "out": str(base / "run"),
                "seed": 3,
                "search": {
                    "generations": 1,
                    "population": 2,
                    "seed_candidates": ["dpo", "hinge"],
                    "confirm": {"top_k": 2, "seeds": 3},
                },
                "training": {"task": "tests.noisy_scores:NoisyTask", "seeds": 2, "steps": 8},
            },
            base / "run",
        )
    finally:
        if previous is None:
            del os.environ["LOSSFORGE_CACHE"]
        else:
            os.environ["LOSSFORGE_CACHE"] = previous
    return base / "run"


def _confirm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT, env=os.environ.copy()
    )


def test_json_prints_one_result_per_line_and_reuses_finished_trainings(noisy_run: Path) -> None:
    done = _confirm(str(noisy_run), "--json")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["name"] for r in results) == ["dpo", "even", "hinge", "strong"]
    assert all(len(r["scores"]) == 3 and r["task"] == "tests.noisy_scores:NoisyTask" for r in results)
    strong = next(r for r in results if r["name"] == "strong")
    assert strong["paired"]["verdict"] == "better" and strong["paired"]["baseline"] == "dpo"
    assert "strong beats dpo" in done.stderr and "0 trainings" not in done.stderr
    table = _confirm(str(noisy_run), "--ids", str(strong["candidate_id"]))
    assert table.returncode == 0 and "strong" in table.stdout and "beats dpo" in table.stdout


def test_nothing_confirmed_exits_1(noisy_run: Path) -> None:
    # On a task where every training fails, nothing can be confirmed (and the failures are recorded).
    failed = _confirm(
        str(noisy_run), "--task", "tests.noisy_scores:UnscoredTask", "--top", "1", "--seeds", "2", "--json"
    )
    assert failed.returncode == 1, failed.stderr
    results = [json.loads(line) for line in failed.stdout.splitlines()]
    assert results and all(not r["scores"] and r["failures"] for r in results)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{missing}",), "no run there (no archive.sqlite)"),
        (("{run}", "--ids", "999"), "--ids: the run has no candidate 999"),
        (("{run}", "--ids", "a,b"), "--ids takes comma-separated candidate ids"),
        (("{run}", "--task", "nope"), "--task: unknown task 'nope'"),
        (("{run}", "--betas", "0.1,-1"), "--betas: every beta must be > 0, got -1.0"),
        (("{run}", "--betas", "x"), "--betas takes comma-separated numbers"),
        (("{run}", "--seeds", "1"), "--seeds must be >= 2"),
        (("{run}", "--option", "a=1"), "--option sets options of a --task other than the run's"),
    ],
)
def test_bad_input_exits_2_with_one_line(noisy_run: Path, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    given = [a.format(run=noisy_run, missing=tmp_path / "nothing") for a in args]
    result = _confirm(*given)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_live_run_holds_the_directory(noisy_run: Path) -> None:
    with RunLock(noisy_run):
        result = _confirm(str(noisy_run))
    assert result.returncode == 2 and "in use by a live run" in result.stderr
