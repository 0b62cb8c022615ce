"""The judge task end to end (train, generate in the worker, grade in the parent), `--option`, and its key.

The judge is tests/openai_server.py on loopback; the policy is a tiny save_pretrained Llama. The key the
judge demands is read from an environment variable named in the options and must never reach a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lossforge.candidates import load_library
from lossforge.discovery.cli import app
from lossforge.discovery.commands.run import resolve_config
from lossforge.evaluate import TrainConfig, train_candidate
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.judge import JudgeTask
from typer.testing import CliRunner

from tests.openai_server import openai_server
from tests.paths import ROOT
from tests.strict_isolation import require
from tests.tiny_hf import build_tiny_model, standard_rows, write_jsonl

__all__ = ["openai_server"]  # the fixture, imported so pytest finds it

QUESTIONS = [{"question_id": 1, "turns": ["what is a"]}, {"question_id": 2, "turns": ["question one"]}]
SECRET = "sk-judge-secret-4f9c1d"  # what the judge demands; grepped for in every file a run leaves

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class WorkerGradedJudge(JudgeTask):
    """The judge as it would be if it graded inside the training worker (which has no network)."""

    scores_in_parent = False


def grade(body: dict[str, Any]) -> str:
    return "Weak. Rating: [[3]]" if "question one" in body["messages"][0]["content"] else "Good. Rating: [[8]]"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("judge-e2e")
    return {
        "model": build_tiny_model(root / "model"),
        "dataset": write_jsonl(root / "pairs.jsonl", standard_rows()),
        "questions": write_jsonl(root / "questions.jsonl", QUESTIONS),
    }


def judge_options(files: dict[str, Path], base_url: str) -> dict[str, Any]:
    return {
        "model": str(files["model"]),
        "dataset": str(files["dataset"]),
        "questions": str(files["questions"]),
        "judge_model": "judge-model",
        "judge_base_url": base_url,
        "judge_api_key_env": "LOSSFORGE_TEST_JUDGE_KEY",
        "max_new_tokens": 4,
    }


def test_judge_trains_and_scores_through_train_candidate(
    files: dict[str, Path], openai_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = openai_server(default=grade, api_key=SECRET)
    monkeypatch.setenv("LOSSFORGE_TEST_JUDGE_KEY", SECRET)
    config = TrainConfig(task="judge", options=judge_options(files, server.base_url), steps=1, threads=1)
    result = train_candidate(load_library()["dpo"], config)
    assert result.status == "ok", result
    assert result.score == pytest.approx(5.5) and result.metrics["n_judged"] == 2.0
    assert len(server.chat_requests) == 2 and result.timings["training"] > 0


def test_the_worker_cannot_reach_the_judge_so_grading_must_be_the_parents(
    files: dict[str, Path], openai_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = openai_server(default=grade, api_key=SECRET)
    monkeypatch.setenv("LOSSFORGE_TEST_JUDGE_KEY", SECRET)
    config = TrainConfig(
        task="tests.evaluate.tasks.test_judge_end_to_end:WorkerGradedJudge",
        steps=1,
        threads=1,
        options={**judge_options(files, server.base_url), "judge_max_attempts": 1},
    )
    with pytest.raises(TaskError, match="could not reach") as caught:
        train_candidate(load_library()["dpo"], config)
    # Only where the worker is in its own network namespace; a shared one would have reached the server.
    require(
        {"network_namespace": "on" if "could not reach" in str(caught.value) else "unavailable: reached"},
        "network_namespace",
    )
    assert server.chat_requests == []


def test_option_flags_reach_the_task_and_unknown_ones_list_the_tasks_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "dpo", "--task", "arithmetic", "--option", "nope=1"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "task 'arithmetic' has no option 'nope'; its options are:" in result.stderr
    out = str(tmp_path / "r")
    result = CliRunner().invoke(app, ["run", "--task", "arithmetic", "--option", "nope=1", "--out", out])
    assert result.exit_code == 2 and "has no option 'nope'" in result.stderr, result.stderr
    config, _ = resolve_config(None, None, {"task": "sentiment", "option": ["sample_temperature=0.7"]})
    assert config.training.task_options == {"sample_temperature": 0.7}


def test_a_key_given_in_the_options_is_refused(files: dict[str, Path]) -> None:
    with pytest.raises(TaskError, match="put the key in an environment variable and name it with judge_api_key_env"):
        JudgeTask({**judge_options(files, "http://127.0.0.1:9/v1"), "judge_api_key": SECRET})


def _lossforge(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    launcher = "import sys; from lossforge.discovery.cli import main; sys.argv[0] = 'lossforge'; main()"
    return subprocess.run(
        [sys.executable, "-c", launcher, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_run_with_the_judge_from_the_command_line_leaves_its_key_in_no_file(
    files: dict[str, Path], openai_server: Any, tmp_path: Path
) -> None:
    server = openai_server(default=grade, api_key=SECRET)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOSSFORGE_CACHE": str(cache), "LOSSFORGE_TEST_JUDGE_KEY": SECRET}
    options = [f"--option={key}={value}" for key, value in judge_options(files, server.base_url).items()]
    config = tmp_path / "run.yaml"
    config.write_text("search: {generations: 0, seed_candidates: [dpo], confirm: {top_k: 0}}\ntraining: {steps: 1}\n")
    run_dir = tmp_path / "run"
    ran = _lossforge(
        ["run", "--config", str(config), "--task", "judge", *options, "--out", str(run_dir), "--json"], env, tmp_path
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "leaked semaphore" not in ran.stderr, ran.stderr[-3000:]
    assert json.loads(ran.stdout)["best"]["score"] == pytest.approx(5.5)
    assert len(server.chat_requests) == 2  # the key from the environment was accepted
    files = [p for root in (run_dir, cache) for p in root.rglob("*") if p.is_file()]
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []
    assert list((cache / "seed_results").glob("*.json"))  # the seed cache was written, without the key
    assert b"LOSSFORGE_TEST_JUDGE_KEY" in (run_dir / "archive.sqlite").read_bytes()  # the variable's name is stored
