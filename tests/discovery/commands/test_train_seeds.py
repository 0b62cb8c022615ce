"""`lossforge train --seeds N`: one training per seed SEED .. SEED+N-1, the mean as the score, and the
statistics a run stores (per-seed scores, mean, standard error, 95% interval)."""

from __future__ import annotations

import json
import math

import typer
from lossforge.discovery.commands import train
from lossforge.discovery.stats import statistics
from typer.testing import CliRunner

TINY = "tests.tiny_task:TinyTask"


def _invoke(*args: str) -> object:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    train.register(app)
    return CliRunner().invoke(app, ["train", *args])


def test_seeds_gives_the_mean_and_the_interval() -> None:
    result = _invoke("dpo", "--task", TINY, "--steps", "2", "--seed", "4", "--seeds", "3", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    data = json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[attr-defined]
    stats = data["stats"]
    assert data["status"] == "ok" and stats["seeds"] == [4, 5, 6] and stats["n"] == 3
    assert len(set(stats["scores"])) == 3  # each seed trains differently
    assert data["score"] == stats["mean"] == statistics.mean(stats["scores"])
    se = math.sqrt(sum((x - stats["mean"]) ** 2 for x in stats["scores"]) / 2 / 3)
    assert math.isclose(stats["stderr"], se) and math.isclose(stats["ci"][1] - stats["mean"], 4.302652729749 * se)
    assert [p["seed"] for p in stats["per_seed"]] == [4, 5, 6]


def test_seeds_below_one_is_a_usage_error() -> None:
    result = _invoke("dpo", "--task", TINY, "--seeds", "0")
    assert result.exit_code == 2 and "--seeds must be >= 1, got 0" in result.output  # type: ignore[attr-defined]
