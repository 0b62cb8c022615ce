"""``lossforge run --suite default`` end to end at a smoke budget, with the real tasks, trainings and scoring
(the offline evolve proposer, one proposal): every candidate trains on the three search tasks, the baseline also
untrained, the confirmation retrains on the held-out tasks (and the untrained reference with them) and the last
line names both task groups. Bad multi-task input is one message, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lossforge.discovery.cli import app
from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.suites import suite
from typer.testing import CliRunner

DEFAULT = suite("default")


def test_a_default_suite_run_confirms_on_the_heldout_tasks(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "search: {generations: 1, population: 1, seed_candidates: [dpo, hinge], confirm: {top_k: 1, seeds: 2}}\n"
        "training: {suite: default, steps: 2, eval_samples: 8}\n"
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--workers", "2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    sentence = summary["confirmed"]
    assert "on the search tasks (sentiment, noisy_labels, off_policy)" in sentence
    assert "on the held-out tasks (length_bias, overoptimization, arithmetic)" in sentence
    with Archive.open(out) as archive:
        rows = {row.name: row for row in archive.candidates()}
        assert rows["dpo"].status == rows["hinge"].status == "ok"
        for row in (r for r in rows.values() if r.status == "ok"):
            assert [entry.task for entry in row.stats.tasks or ()] == list(DEFAULT.search)  # type: ignore[union-attr]
            assert set(row.metrics) >= set(DEFAULT.search)
        for task in DEFAULT.search:
            assert len(archive.seed_runs(rows["dpo"].id, 0, task)) == 1  # the untrained reference
        confirmed = archive.confirmations()
        report = archive.get_meta("confirmation")
    assert {row["task"] for row in confirmed} == {*DEFAULT.search, *DEFAULT.heldout}
    assert sum(row["candidate_id"] is None for row in confirmed) == 6 * 2  # the reference, every task and seed
    groups = {(g["group"], g["role"]) for g in report["groups"]}
    assert {("search", "baseline"), ("heldout", "baseline"), ("search", "candidate")} <= groups


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "nope"], "unknown suite 'nope'; built-in suites: default"),
        (["--tasks", "sentiment,arithmetic", "--option", "sample_temperature=0.7"], "set one task's options"),
        (["--tasks", "sentiment,arithmetic", "--aggregate", "max"], "search.aggregate: 'max' is not one of"),
    ],
)
def test_bad_multi_task_flags_are_one_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["run", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
