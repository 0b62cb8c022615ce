"""Finished runs for the review tests, built with the real loop on the tiny task once per session: an LLM run
through the loopback OpenAI server (ok, rejected, duplicate rows from the loop; failed and diverged rows,
multi-seed stats and a confirmation written with the Archive API), an `evolve` run, and a run whose report
cannot be written; plus the CLI runner and the exit-2 check the review tests share."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lossforge.discovery.cli import app
from lossforge.discovery.config import build_config
from lossforge.discovery.loop import run_discovery
from lossforge.discovery.progress import Progress
from lossforge.discovery.review.report import GenerationReports
from lossforge.discovery.stats.seed_stats import SeedStats
from lossforge.discovery.storage.archive import Archive
from typer.testing import CliRunner

from tests.openai_server import OpenAIServer
from tests.scripted_llm import DPO_REWRITE, LEAKY, MIXED, SHIFTED, SQUARED, ScriptBySlot, reply

TINY = "tests.tiny_task:TinyTask"
TRAINING = {"task": TINY, "steps": 2, "eval_samples": 4}
HOSTILE = "<script>alert(1)</script>"
STATS = {
    "n": 3,
    "seeds": [7, 8, 9],
    "scores": [0.1, 0.2, 0.3],
    "mean": 0.2,
    "stderr": 0.05,
    "ci": [0.1, 0.3],
    "paired": {"baseline": "dpo", "baseline_id": 1, "mean": 0.03, "ci": [0.01, 0.05], "verdict": "better"},
}
_BUILT: dict[str, Path] = {}


class Notes(Progress):
    """A progress sink that keeps the loop's notes."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def _llm_run(run_dir: Path) -> None:
    script = ScriptBySlot(
        {
            (1, 0, 0): [reply("shifted", SHIFTED, thought=f"{HOSTILE} shift the margin")],
            (1, 1, 0): [reply("leaky", LEAKY)],
            (1, 1, 1): [reply("squared", SQUARED)],
            (2, 0, 0): [reply("dpo_again", DPO_REWRITE)],
            (2, 1, 0): ['{"thought": "t", "name": "cut", "code": "def loss(a, b'],
            (2, 1, 1): [reply("mixed", MIXED)],
        }
    )
    previous = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = "sk-test"
    try:
        with OpenAIServer([], default=script, api_key="sk-test") as server:
            config = build_config(
                {
                    "proposer": {
                        "kind": "openai",
                        "model": "fake-model",
                        "base_url": server.base_url,
                        "max_retries": 1,
                        "prices": {"fake-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
                    },
                    "search": {"generations": 2, "population": 2, "repair_rounds": 1, "confirm": {"top_k": 0}},
                    "training": TRAINING,
                    "seed": 0,
                }
            )
            summary = run_discovery(config, run_dir, progress=False, on_generation_end=GenerationReports())
    finally:
        os.environ.pop("OPENAI_API_KEY") if previous is None else os.environ.__setitem__("OPENAI_API_KEY", previous)
    assert summary.status == "finished", summary
    with Archive.open(run_dir) as archive:  # statuses the loop cannot be scripted into cheaply
        archive.add_candidate(
            generation=2,
            idx=2,
            name="raises",
            code=MIXED,
            status="failed",
            stage="training",
            reason="ValueError: boom from the candidate",
            proposer="openai",
        )
        archive.add_candidate(
            generation=2,
            idx=3,
            name="explodes",
            code=SHIFTED,
            status="diverged",
            stage="training",
            reason="non-finite loss at step 3",
            proposer="openai",
        )
        squared = next(r for r in archive.candidates() if r.name == "squared")
        archive.update_candidate(squared.id, stats=SeedStats.from_json(STATS))
        archive.record_confirmation(candidate_id=squared.id, task=TINY, beta=0.1, seed=7, status="ok", score=0.1)
        archive.set_meta(
            "confirmation",
            {
                "sentence": "beats dpo on tiny by +0.031 [+0.012, +0.050] over 3 held-out seeds",
                "winner": {"candidate_id": squared.id, "name": "squared", "paired": STATS["paired"]},
                "results": [
                    {
                        "candidate_id": squared.id,
                        "name": "squared",
                        "role": "candidate",
                        "task": TINY,
                        "beta": 0.1,
                        "seeds": [7, 8, 9],
                        "scores": [0.1, 0.2, 0.3],
                        "mean": 0.2,
                        "stderr": 0.05,
                        "ci": [0.1, 0.3],
                        "paired": STATS["paired"],
                        "vs_best_library": None,
                    },
                    {
                        "candidate_id": 1,
                        "name": "dpo",
                        "role": "baseline",
                        "task": TINY,
                        "beta": 0.1,
                        "seeds": [7, 8, 9],
                        "scores": [0.1, 0.15, 0.25],
                        "mean": 0.17,
                        "stderr": 0.04,
                        "ci": [0.09, 0.25],
                        "paired": None,
                        "vs_best_library": None,
                    },
                ],
            },
        )


def review_runs(root: Path) -> dict[str, Path]:
    """``llm`` and ``evolve`` runs under ``root/runs`` (built once per session), and ``notes``: a
    generations-0 run whose report.html is a directory, so the loop's report writes fail."""
    if not _BUILT:
        runs = root / "runs"
        _llm_run(runs / "llm")
        config = build_config(
            {
                "proposer": {"kind": "evolve"},
                "search": {"generations": 1, "population": 2, "confirm": {"top_k": 0}},
                "training": TRAINING,
                "seed": 0,
            }
        )
        assert (
            run_discovery(config, runs / "evolve", progress=False, on_generation_end=GenerationReports()).status
            == "finished"
        )
        (root / "blocked" / "report.html").mkdir(parents=True)
        sink = Notes()
        blocked = build_config(
            {
                "proposer": {"kind": "evolve"},
                "search": {"generations": 0, "confirm": {"top_k": 0}},
                "training": TRAINING,
            }
        )
        summary = run_discovery(blocked, root / "blocked", progress=sink, on_generation_end=GenerationReports())
        assert summary.status == "finished"
        (root / "blocked" / "notes.json").write_text(json.dumps(sink.notes))
        _BUILT.update(root=root, runs=runs, llm=runs / "llm", evolve=runs / "evolve", blocked=root / "blocked")
    return dict(_BUILT)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def assert_usage_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for needle in needles:
        assert needle in result.stderr, result.stderr
