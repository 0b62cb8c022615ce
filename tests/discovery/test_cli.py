"""README promises held through the real `lossforge` command (a fresh interpreter per call where the process
itself is under test: exit codes, signals, what reaches stderr at exit).

Runs use the tiny task with one training step; the LLM is tests/openai_server.py on loopback. The session's
cache is shared, so seed results trained by one run serve the next.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lossforge.discovery.cli import app
from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.tasks.base import TaskScore
from typer.testing import CliRunner

from tests.cli_process import LAUNCHER, cli_env
from tests.openai_server import openai_server
from tests.paths import ROOT
from tests.scripted_llm import SHIFTED, reply
from tests.strict_isolation import assert_protections
from tests.tiny_hf import build_tiny_model, conversational_rows, standard_rows, write_jsonl
from tests.tiny_task import TinyTask

__all__ = ["openai_server"]  # the fixture, imported so pytest finds it

TINY = "tests.tiny_task:TinyTask"


class ThreadsTask(TinyTask):
    """The tiny task, reporting the torch threads the training worker ran with."""

    def score(self, policy: Any, tokenizer: Any, *, seed: int) -> TaskScore:
        scored = super().score(policy, tokenizer, seed=seed)
        return TaskScore(scored.score, {**scored.metrics, "torch_threads": float(torch.get_num_threads())})


def lossforge(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ budgets


@pytest.mark.parametrize(
    ("budget", "said", "in_subprocess"),
    [
        ("max_llm_calls: 1", "1 of max_calls=1 calls used", False),
        ("max_tokens: 5", "of max_tokens=5 tokens used", True),  # the text summary, from the process itself
        ("max_cost_usd: 0.000001", "of max_cost_usd=$0.0000 spent", False),
    ],
)
def test_a_budget_ends_the_run_with_exit_0_and_the_summary_says_which(
    budget: str, said: str, in_subprocess: bool, tmp_path: Path, openai_server: Any
) -> None:
    server = openai_server([], default=reply("shifted", SHIFTED))
    config = write_config(
        tmp_path / "run.yaml",
        f"""
proposer: {{kind: openai, model: fake-model, base_url: "{server.base_url}", concurrency: 1,
           prices: {{fake-model: {{input_per_mtok: 1000, output_per_mtok: 1000}}}}}}
budget: {{{budget}}}
search: {{generations: 2, population: 2, seed_candidates: [dpo], confirm: {{top_k: 0}}}}
training: {{task: "{TINY}", steps: 1, eval_samples: 4}}
""",
    )
    args = ["run", "--config", str(config), "--out", str(tmp_path / "run")]
    if in_subprocess:
        completed = lossforge(*args, cwd=tmp_path)
        assert completed.returncode == 0, completed.stderr[-3000:]
        summary_line = [line for line in completed.stderr.splitlines() if line.startswith("budget (")]
        assert len(summary_line) == 1 and said in summary_line[0], completed.stderr[-2000:]
    else:
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout)
        assert summary["status"] == "budget" and said in summary["stop_reason"], summary
    assert len(server.chat_requests) == 1  # the cap held before a second request was paid for
    with Archive.open(tmp_path / "run") as archive:
        assert not archive.candidates(status="pending")
        assert archive.get_meta("state")["status"] == "budget"


# ------------------------------------------------------------------------------------------ Ctrl-C


class GatedTask(TinyTask):
    """The tiny task whose trainings on seed ``gated_seed`` (option, default 1) wait until the file ``open`` exists
    in the folder named by option ``gate``: a test interrupts a training at a point it controls, not at one a
    race picks. The training and the scoring process seed torch before they load the reference, so
    ``reference()`` knows the seed; each call leaves ``GATE/seed-S-pid-P`` (written before the lock-down)."""

    def reference(self) -> Any:
        gate, seed = Path(str(self.options["gate"])), torch.initial_seed()
        (gate / f"seed-{seed}-pid-{os.getpid()}").touch()
        while seed == int(self.options.get("gated_seed", 1)) and not (gate / "open").exists():
            time.sleep(0.02)  # a training held at the gate: the test opens it when it has interrupted the run
        return super().reference()


def _count(run_dir: Path, query: str) -> int:
    """A count from the run's archive, read-only while the run writes it; 0 before the table exists."""
    try:
        with sqlite3.connect(f"file:{run_dir / 'archive.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute(query).fetchone()[0] or 0)
    except sqlite3.OperationalError:
        return 0


def _wait_until_seed_1_waits_after_seed_0_finished(run_dir: Path, gate: Path, process: subprocess.Popen[str]) -> None:
    """Poll until seed 0's training is archived and seed 1's is held at the gate (it stays there until opened)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        if _count(run_dir, "SELECT COUNT(*) FROM seed_runs WHERE seed = 0") and any(gate.glob("seed-1-*")):
            return
        time.sleep(0.05)
    pytest.fail("seed 1 never reached the gate after seed 0 finished")


def test_ctrl_c_during_training_exits_1_and_resume_finishes_cleanly(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    config = write_config(
        tmp_path / "run.yaml",
        f"""
search: {{generations: 0, seed_candidates: [dpo], confirm: {{top_k: 0}}}}
training: {{task: "tests.discovery.test_cli:GatedTask", steps: 2, eval_samples: 8, seeds: 2,
           task_options: {{gate: "{gate}"}}}}
""",
    )
    run_dir = tmp_path / "run"
    env = {**cli_env(), "LOSSFORGE_CACHE": str(tmp_path / "cache")}  # nothing cached: every seed trains
    command = [sys.executable, "-c", LAUNCHER, "run", "--config", str(config), "--out", str(run_dir)]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_until_seed_1_waits_after_seed_0_finished(run_dir, gate, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, stderr[-3000:]
    assert f"interrupted; the archive is intact: lossforge run --resume {run_dir}" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    with Archive.open(run_dir) as archive:  # consistent: opens, the candidate is pending with seed 0 kept
        (row,) = archive.candidates()
        kept = archive.seed_runs(row.id, 2)
    assert row.status == "pending" and sorted(kept) == [0], (row.status, kept)
    seed_0_processes = sorted(path.name for path in gate.glob("seed-0-*"))  # its training and its scoring

    (gate / "open").touch()
    resumed = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "run", "--resume", str(run_dir), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["status"] == "finished"
    with Archive.open(run_dir) as archive:
        (after,) = archive.candidates()
        runs = archive.seed_runs(after.id, 2)
    assert after.status == "ok" and after.stats is not None and list(after.stats.seeds) == [0, 1], after
    assert runs[0] == kept[0]  # seed 0 kept as it was ...
    assert sorted(path.name for path in gate.glob("seed-0-*")) == seed_0_processes  # ... and not trained again


# ------------------------------------------------------------------------------------------ the hf task


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-cli")
    return {
        "model": build_tiny_model(root / "model"),
        "standard": write_jsonl(root / "standard.jsonl", standard_rows(12)),
        "conversational": write_jsonl(root / "conversational.jsonl", conversational_rows(12)),
    }


def test_hf_task_trains_a_local_model_on_a_standard_jsonl_through_lossforge_train(
    hf_files: dict[str, Path], tmp_path: Path
) -> None:
    completed = lossforge(
        "train",
        "dpo",
        "--task",
        "hf",
        "--model",
        str(hf_files["model"]),
        "--dataset",
        str(hf_files["standard"]),
        "--option",
        "eval_fraction=0.25",
        "--steps",
        "2",
        "--threads",
        "1",
        "--json",
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    payload = json.loads(completed.stdout)
    assert payload["status"] == "ok" and 0.0 <= payload["score"] <= 1.0
    assert payload["metrics"]["pref_accuracy"] == payload["score"] and "margin" in payload["metrics"]
    assert "leaked semaphore" not in completed.stderr, completed.stderr[-3000:]


def test_hf_task_trains_on_a_conversational_jsonl_through_lossforge_train(hf_files: dict[str, Path]) -> None:
    args = [
        "train",
        "dpo",
        "--task",
        "hf",
        "--model",
        str(hf_files["model"]),
        "--dataset",
        str(hf_files["conversational"]),
        "--steps",
        "2",
        "--threads",
        "1",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and 0.0 <= payload["score"] <= 1.0 and payload["timings"]["training"] > 0


# ------------------------------------------------------------------------------------------ check


def test_check_without_the_static_policy_still_sandboxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the sandbox child inherits the working directory
    printing = tmp_path / "printing.py"
    printing.write_text(
        "import torch.nn.functional as F\n\n\ndef loss(pc, pr, rc, rr, beta):\n    print('hello')\n"
        "    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))\n"
    )
    writing = tmp_path / "writing.py"
    writing.write_text(printing.read_text().replace("print('hello')", "open('pwned.txt', 'w').write('x')"))
    runner = CliRunner()
    refused = runner.invoke(app, ["check", str(printing), "--json"])
    assert refused.exit_code == 1 and json.loads(refused.stdout)["stage"] == "static"
    allowed = runner.invoke(app, ["check", str(printing), "--no-static-policy", "--json"])
    assert allowed.exit_code == 0, allowed.stdout
    report = json.loads(allowed.stdout)
    assert report["passed"] and report["stage"] == "ok"
    assert_protections(report["isolation"])  # the check report says which protections held
    hostile = runner.invoke(app, ["check", str(writing), "--no-static-policy", "--json"])
    assert hostile.exit_code == 1 and json.loads(hostile.stdout)["stage"] == "sandbox"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["printing.py", "writing.py"]  # nothing was written


# ------------------------------------------------------------------------------------------ run provenance


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def test_run_splits_the_cores_between_workers_and_stores_the_git_sha(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "run.yaml",
        """
search: {generations: 0, seed_candidates: [dpo, hinge], confirm: {top_k: 0}}
training: {task: "tests.discovery.test_cli:ThreadsTask", steps: 1, eval_samples: 4}
""",
    )
    head_before = _git("rev-parse", "HEAD")
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--workers", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.stderr[-3000:]
    with Archive.open(tmp_path / "run") as archive:
        threads = {row.name: row.metrics["torch_threads"] for row in archive.candidates()}
        stored_sha = archive.get_meta("git_sha")
    assert threads == {name: float(max(1, (os.cpu_count() or 1) // 2)) for name in ("dpo", "hinge")}
    assert (stored_sha is None) == (head_before is None)  # None only outside a git checkout
    # The commit the run was started from (others may commit meanwhile): between head_before and HEAD.
    sha = (stored_sha or "").removesuffix("-dirty")
    assert _git("merge-base", "--is-ancestor", head_before or "", sha) is not None
    assert _git("merge-base", "--is-ancestor", sha, "HEAD") is not None
