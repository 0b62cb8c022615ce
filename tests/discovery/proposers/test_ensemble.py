"""LLM ensembles (issue 11, item 3): the bandit's policies, and a run against one loopback server serving two
models, one always replying broken code and one valid losses: the working model gets most calls, and after
SIGKILL and resume every generation's archived state and choices are what the final archive recomputes."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from lossforge.discovery.cli import app
from lossforge.discovery.config import build_config
from lossforge.discovery.loop import run_discovery
from lossforge.discovery.proposers.bandit import ArmStats, Bandit
from lossforge.discovery.proposers.build import build_proposer
from lossforge.discovery.proposers.ensemble import EnsembleProposer
from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.config_error import ConfigError
from typer.testing import CliRunner

from tests.openai_server import OpenAIServer
from tests.paths import ROOT
from tests.scripted_llm import HEAD

CLI = [sys.executable, "-m", "lossforge.discovery.commands.run"]
BROKEN = json.dumps(
    {"thought": "t", "name": "leaky", "code": "import os\n\ndef loss(a, b, c, d, beta):\n    return a\n"}
)


def test_ucb1_plays_every_arm_once_then_prefers_the_better_mean() -> None:
    bandit = Bandit("ucb1", ("a", "b"))
    fresh = {"a": ArmStats(), "b": ArmStats()}
    assert bandit.plan(1, fresh, [11, 12, 13]).choices == ("a", "b", "a")  # earlier slots count as plays
    played = {"a": ArmStats(plays=5, reward=0.0), "b": ArmStats(plays=5, reward=5.0)}
    assert bandit.choose(played, 0) == "b"
    assert Bandit("ucb1", ("a", "b"), {"a": 100.0}).choose(played, 0) == "a"  # a weight multiplies the index


def test_thompson_is_deterministic_in_the_slot_seed_and_follows_the_evidence() -> None:
    bandit = Bandit("thompson", ("a", "b"))
    state = {"a": ArmStats(plays=20, reward=1.0), "b": ArmStats(plays=20, reward=19.0)}
    picks = [bandit.choose(state, seed) for seed in range(50)]
    assert picks == [bandit.choose(state, seed) for seed in range(50)]
    assert picks.count("b") >= 45


def test_ensemble_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="proposer.models needs proposer.kind 'openai' and distinct model names"):
        build_config({"proposer": {"kind": "openai", "models": [{"model": "m"}, {"model": "m"}]}})
    config = build_config({"proposer": {"kind": "openai", "models": [{"model": "m", "weight": 2}]}})
    assert config.proposer.models[0].weight == 2 and config.proposer.bandit == "ucb1"


def _script(body: dict[str, Any]) -> str:
    if body["model"] == "broken-model":
        return BROKEN
    g, p = map(int, re.search(r"Generation (\d+), proposal (\d+)\.", body["messages"][1]["content"]).groups())  # type: ignore[union-attr]
    shift = 0.05 * (10 * g + p)  # a different loss in every slot: never a duplicate
    code = HEAD + f"    return -F.logsigmoid(beta * margin - {shift:.2f})\n"
    return json.dumps({"thought": "shifted DPO", "name": f"shift_{g}_{p}", "code": code})


def _meta(database: Path, key: str) -> bool:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM meta WHERE key = ?", (key,)).fetchone()[0] > 0
    except sqlite3.OperationalError:  # the schema is being created
        return False


def test_the_bandit_favours_the_working_model_and_survives_sigkill(tmp_path: Path) -> None:
    with OpenAIServer([], default=_script, api_key="sk-test", models=["broken-model", "good-model"]) as server:
        data = {
            "proposer": {
                "kind": "openai",
                "base_url": server.base_url,
                "max_retries": 1,
                "timeout_s": 5.0,
                "models": [{"model": "broken-model"}, {"model": "good-model"}],
            },
            "search": {
                "generations": 3,
                "population": 2,
                "repair_rounds": 0,
                "seed_candidates": ["dpo"],
                "confirm": {"top_k": 0},
            },
            "training": {"task": "tests.tiny_task:TinyTask", "steps": 1, "eval_samples": 4},
        }
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
        run_dir = tmp_path / "run"
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [*CLI, "--config", str(tmp_path / "run.yaml"), "--out", str(run_dir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 240
            while not _meta(run_dir / "archive.sqlite", "bandit/g2") and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGKILL)  # mid-run: generation 2 planned, its proposals under way
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        with Archive.open(run_dir) as archive:
            planned_before = {g: archive.get_meta(f"bandit/g{g}") for g in (1, 2)}
            assert not archive.get_meta("state")  # it did not finish

        os.environ["OPENAI_API_KEY"] = "sk-test"
        try:
            config = build_config({**data, "out": str(run_dir)})
            summary = run_discovery(config, run_dir, resume=True, progress=False)
            ensemble = build_proposer(config)
        finally:
            del os.environ["OPENAI_API_KEY"]
    assert summary.status == "finished" and summary.generations == 3
    assert isinstance(ensemble, EnsembleProposer)
    with Archive.open(run_dir) as archive:
        rows = [row for row in archive.candidates() if row.generation >= 1]
        for generation in range(1, 4):
            stored = archive.get_meta(f"bandit/g{generation}")
            # The archived state and choices are what the final archive recomputes: the same after resume.
            assert stored == ensemble.plan_for(archive, generation).to_dict()
            if generation <= 2:
                assert stored == planned_before[generation]
            for row in rows:
                if row.generation == generation:
                    assert row.origin == f"llm:{stored['choices'][row.idx]}"
        # After one play each (generation 1) and one round of evidence, the last generation goes to the working model.
        assert archive.get_meta("bandit/g3")["choices"] == ["good-model", "good-model"]
        ensemble.close()
    calls = Counter(row.origin for row in rows)
    assert calls["llm:good-model"] > calls["llm:broken-model"], calls
    assert {row.status for row in rows if row.origin == "llm:broken-model"} == {"rejected"}
    assert {row.status for row in rows if row.origin == "llm:good-model"} == {"ok"}

    # `leaderboard --models`: each model's proposals, success rate, best score and cost.
    shown = CliRunner().invoke(app, ["leaderboard", str(run_dir), "--models", "--json"])
    assert shown.exit_code == 0, shown.output
    records = {r["model"]: r for r in map(json.loads, shown.stdout.splitlines())}
    assert records["broken-model"]["proposals"] == calls["llm:broken-model"] and records["broken-model"]["ok"] == 0
    good = records["good-model"]
    assert good["success_rate"] == 1.0 and good["best_score"] is not None and good["cost_usd"] == 0.0
    table = CliRunner().invoke(app, ["leaderboard", str(run_dir), "--models"])
    assert table.exit_code == 0 and "good-model" in table.stdout and "100%" in table.stdout
