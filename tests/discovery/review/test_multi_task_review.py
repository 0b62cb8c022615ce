"""Review of a multi-task run (noisy tasks of ``tests.noisy_scores``, real loop): the leaderboard's columns are
the tasks' normalized scores, ``show`` prints one line per task, the report names every task and the
confirmation's search and held-out groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lossforge.discovery.cli import app
from lossforge.discovery.review.report import write_report
from typer.testing import CliRunner

from tests.noisy_scores import HELDOUT_TASK, SCALED_TASK, TASK, heldout_run_config, run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOSSFORGE_CACHE", str(root / "cache"))
        run(heldout_run_config(root / "run", seed=3), root / "run")
    return root / "run"


def test_leaderboard_columns_are_the_tasks(run_dir: Path) -> None:
    result = CliRunner().invoke(app, ["leaderboard", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert entries[0]["name"] == "strong"
    for entry in entries:
        assert set(entry["metrics"]) >= {TASK, SCALED_TASK}
    table = CliRunner().invoke(app, ["leaderboard", str(run_dir)])
    assert table.exit_code == 0 and "noisy_scores:NoisyTask" in table.output.replace("\n", "")


def test_show_prints_every_task(run_dir: Path) -> None:
    result = CliRunner().invoke(app, ["show", str(run_dir), "3"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("task ")]
    assert [line.split(": ")[0] for line in lines] == [f"task {TASK}", f"task {SCALED_TASK}"]
    assert all("normalized" in line and "vs dpo" in line for line in lines)


def test_the_report_shows_the_search_and_heldout_groups(run_dir: Path) -> None:
    html = write_report(run_dir).read_text()
    assert "the search tasks (" in html and "the held-out tasks (" in html
    assert TASK in html and SCALED_TASK in html and HELDOUT_TASK in html
