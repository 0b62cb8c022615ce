"""Shipped references of the built-in tiny tasks: loaded without training, hashed, keyed, damage reported once;
and the same tiny training twice on one machine gives the same scores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lossforge.candidates import load_builtin
from lossforge.evaluate.tasks import references
from lossforge.evaluate.tasks.arithmetic import ArithmeticTask
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.references import MANIFEST, PACKAGE_DIR, file_sha256
from lossforge.evaluate.tasks.sentiment import SentimentTask
from lossforge.evaluate.tasks.tiny import TinyTask
from lossforge.evaluate.training.launcher import TrainConfig, train_candidate

from tests.paths import ROOT

TASKS = (SentimentTask, ArithmeticTask)


@pytest.fixture
def copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped references that the tasks read instead of the package's (``$LOSSFORGE_REFERENCES``)."""
    directory = tmp_path / "references"
    shutil.copytree(PACKAGE_DIR, directory)
    monkeypatch.setenv(references.ENV_VAR, str(directory))
    return directory


def _never_build(self: TinyTask, *args: object, **kwargs: object) -> None:
    raise AssertionError(f"{self.name}: the shipped reference should have been used, not a new build")


def test_shipped_references_are_current_and_match_their_hashes() -> None:
    assert references.check(PACKAGE_DIR) == []  # stale after a build change: rerun the maintainer command
    manifest = json.loads((PACKAGE_DIR / MANIFEST).read_text())
    for name, entry in manifest["tasks"].items():
        for relative, digest in entry["files"].items():
            assert file_sha256(PACKAGE_DIR / name / relative) == digest
    total = sum(p.stat().st_size for p in PACKAGE_DIR.rglob("*") if p.is_file())
    assert total < 3_000_000  # package data stays small


def test_default_tasks_load_the_shipped_files_without_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TinyTask, "build_into", _never_build)
    manifest = json.loads((PACKAGE_DIR / MANIFEST).read_text())
    for cls in TASKS:
        task = cls(cache_dir=tmp_path)
        model, tokenizer = task.reference()
        assert task.artifact_dir.parent == tmp_path / "tasks"  # copied into the cache
        for relative, digest in manifest["tasks"][task.name]["files"].items():
            assert file_sha256(task.artifact_dir / relative) == digest
        assert len(task.preference_data()) == cls.OPTIONS["train_pairs"]
        assert next(model.parameters()).numel() > 0 and len(tokenizer) > 4


def test_only_the_default_configuration_is_shipped() -> None:
    assert SentimentTask().shipped() is not None and ArithmeticTask().shipped() is not None
    # A scoring-only option changes neither the data nor the reference.
    assert SentimentTask({"sample_temperature": 0.7}).cache_key() == SentimentTask().cache_key()

    class Wider(ArithmeticTask):
        model_spec = type(ArithmeticTask.model_spec)(hidden_size=96)

    class Rebuilt(ArithmeticTask):  # same settings, another class: its build may differ
        pass

    for task in (
        SentimentTask({"sft_steps": 121}),
        SentimentTask(task_seed=7),
        ArithmeticTask({"train_pairs": 512}),
        Wider(),
        Rebuilt(),
    ):
        assert task.shipped() is None
        assert task.cache_key() == task.build_key()  # builds its own reference, keyed as before


def test_cache_key_follows_the_shipped_hashes(copied: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = ArithmeticTask(cache_dir=tmp_path / "cache")
    before, old_dir = task.cache_key(), task.artifact_dir
    assert before != task.build_key()
    # A maintainer's rebuild: a changed file and its new hash in the manifest.
    data_file = copied / "arithmetic" / "data.json"
    data = json.loads(data_file.read_text())
    data["train"] = data["train"][::-1]
    data_file.write_text(json.dumps(data))
    manifest = json.loads((copied / MANIFEST).read_text())
    manifest["tasks"]["arithmetic"]["files"]["data.json"] = file_sha256(data_file)
    (copied / MANIFEST).write_text(json.dumps(manifest))
    assert task.cache_key() != before and task.artifact_dir != old_dir  # the old cache entry is never reused
    monkeypatch.setattr(TinyTask, "build_into", _never_build)
    assert task.data()["train"] == data["train"]


@pytest.mark.parametrize("damage", ["flipped", "missing"])
def test_a_damaged_shipped_file_is_one_clear_error(copied: Path, tmp_path: Path, damage: str) -> None:
    model_file = copied / "sentiment" / "reference" / "model.safetensors"
    if damage == "missing":
        model_file.unlink()
    else:
        content = bytearray(model_file.read_bytes())
        content[-1] ^= 1
        model_file.write_bytes(bytes(content))
    with pytest.raises(TaskError) as info:  # at construction, so the process that names the task reports it
        SentimentTask(cache_dir=tmp_path / "cache").reference()
    message = str(info.value)
    assert f"shipped reference file {model_file} " in message
    assert "python -m lossforge.evaluate.tasks.references --rebuild sentiment" in message
    assert ("is missing" in message) == (damage == "missing")
    assert not [p for p in (tmp_path / "cache").rglob("*sentiment*") if p.is_dir()]  # nothing half-copied is left
    problems = references.check(copied)  # the maintainer command still runs
    assert problems[0] == f"sentiment: {message}"
    # The tasks built on sentiment's reference say so rather than fail; the others are fine.
    derived = {"off_policy", "noisy_labels", "overoptimization"}
    assert {line.split(":")[0] for line in problems[1:]} == derived
    assert all("builds on a damaged shipped reference" in line for line in problems[1:])


def test_the_cli_reports_a_damaged_shipped_file_with_exit_2(copied: Path, tmp_path: Path) -> None:
    data_file = copied / "arithmetic" / "data.json"
    data_file.write_text(data_file.read_text() + " ")  # valid JSON still, but not the shipped bytes
    env = {**os.environ, "LOSSFORGE_CACHE": str(tmp_path / "cache"), references.ENV_VAR: str(copied)}
    command = [sys.executable, "-c", "from lossforge.discovery.cli import main; main()", "train", "dpo"]
    arguments = [*command, "--task", "arithmetic", "--steps", "0", "--eval-samples", "8"]
    completed = subprocess.run(arguments, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"shipped reference file {data_file} " in errors[0], completed.stderr[-3000:]


def test_rebuild_writes_the_files_and_their_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_build(self: TinyTask, directory: Path, *, record_seconds: bool = True) -> None:
        assert not record_seconds  # shipped files carry no timing, so a rebuild is byte-for-byte reproducible
        (directory / "reference").mkdir()
        (directory / "reference" / "model.safetensors").write_bytes(b"weights of " + self.name.encode())
        (directory / "data.json").write_text('{"train": []}')

    monkeypatch.setattr(TinyTask, "build_into", fake_build)
    assert references.main(["--rebuild", "arithmetic", "--dir", str(tmp_path)]) == 0
    entry = json.loads((tmp_path / MANIFEST).read_text())["tasks"]["arithmetic"]
    assert entry["build_key"] == ArithmeticTask().build_key()
    assert entry["files"] == {
        "data.json": file_sha256(tmp_path / "arithmetic" / "data.json"),
        "reference/model.safetensors": file_sha256(tmp_path / "arithmetic" / "reference" / "model.safetensors"),
    }
    assert references.check(tmp_path) == [
        f"{name}: not shipped; run `python -m lossforge.evaluate.tasks.references --rebuild {name}`"
        for name in references.SHIPPED
        if name != "arithmetic"
    ]


def test_same_machine_and_seed_give_identical_scores() -> None:
    config = TrainConfig(task="arithmetic", steps=4, eval_samples=32, seed=0, threads=1, timeout=300.0)
    first = train_candidate(load_builtin("dpo"), config)
    second = train_candidate(load_builtin("dpo"), config)
    assert first.status == second.status == "ok", (first.error, second.error)
    assert first.score == second.score and first.metrics == second.metrics
