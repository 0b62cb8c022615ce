"""Runs archived by an older lossforge still open (issue 17): `leaderboard`, `leaderboard --all`, `show`, `report`
and `runs` of the current code on two run directories written by main 8d4392a (tests/fixtures/archive_8d4392a,
how they were made: its README.md). Their `stats` column is 8d4392a's free-form JSON: multi-seed means,
intervals, per-seed scores, the paired difference to the baseline with its verdict, successive-halving rungs.

The fixture is copied to tmp_path before any command sees it (the current code may migrate an archive it opens),
and every expected value is read from the fixture's SQLite, opened read-only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.cli import app
from typer.testing import CliRunner

from tests.paths import FIXTURES

FIXTURE = FIXTURES / "archive_8d4392a"
RUNS = ("evolve", "llm")  # evolve: multi-seed, successive halving, a duplicate; llm: rejections, repairs, LLM calls
# The archives as 8d4392a wrote them: a test that wrote into the fixture, or a fixture regenerated, fails here.
SHA256 = {
    "evolve": "21be6e8399729a5db09e26e5ab5bccd9cd3b83e3e3c5340cc1d75e05f135277a",
    "llm": "043dad7c2251d059c447a703c9a80e8b3c56fb8a3cef8609f38cd21a9257c13d",
}
NUMBER = r"[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?"


def query(run: str, sql: str, *args: Any) -> list[sqlite3.Row]:
    """Rows of the fixture's archive, opened read-only and immutable (nothing can write to it)."""
    uri = f"file:{FIXTURE / run / 'archive.sqlite'}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, args).fetchall()


def candidates(run: str) -> list[dict[str, Any]]:
    rows = query(run, "SELECT id, name, status, stage, reason, score, stats, metrics FROM candidates ORDER BY id")
    return [
        {
            **dict(row),
            "stats": json.loads(row["stats"]) if row["stats"] else None,
            "metrics": json.loads(row["metrics"]) if row["metrics"] else {},
        }
        for row in rows
    ]


def multi_seed(row: dict[str, Any]) -> bool:
    stats = row["stats"] or {}
    return row["status"] == "ok" and int(stats.get("n") or 0) >= 2 and stats.get("mean") is not None


def meta(run: str, key: str) -> Any:
    (row,) = query(run, "SELECT value FROM meta WHERE key = ?", key)
    return json.loads(row["value"])


def cli(*args: str | Path) -> Any:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def close_to(shown: str, value: float, digits: int) -> bool:
    """Whether ``shown`` is ``value`` printed to ``digits`` significant digits (or more)."""
    return math.isclose(float(shown), value, rel_tol=0.51 * 10 ** (1 - digits), abs_tol=1e-12)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """A copy of the fixture: the commands run on it, never on the fixture."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "runs", ignore=shutil.ignore_patterns("README.md", "ruff.toml")))


def test_the_fixture_is_what_8d4392a_wrote() -> None:
    """Unchanged bytes, and every kind of row the commands below are asked to read is there."""
    for run in RUNS:
        digest = hashlib.sha256((FIXTURE / run / "archive.sqlite").read_bytes()).hexdigest()
        assert digest == SHA256[run], f"{run}/archive.sqlite changed: the fixture must stay as 8d4392a wrote it"
        assert meta(run, "state")["status"] == "finished"
        assert query(run, "SELECT count(*) AS n FROM confirmations")[0]["n"] > 0
        assert meta(run, "confirmation")["sentence"]
        columns = {row["name"] for row in query(run, "PRAGMA table_info(candidates)")}
        assert "stats" in columns  # the free-form JSON column the typed statistics replace
    evolve, llm = candidates("evolve"), candidates("llm")
    paired = [row for row in evolve if multi_seed(row) and (row["stats"].get("paired") or {}).get("verdict")]
    assert paired and any(row["stats"].get("rungs") for row in paired)
    assert any(row["score"] is None and row["status"] == "ok" for row in evolve)  # stopped at rung 0
    assert {row["status"] for row in evolve} == {"ok", "duplicate"}
    assert {row["stage"] for row in llm if row["status"] == "rejected"} == {"static", "parse", "sandbox"}
    assert query("llm", "SELECT count(*) AS n FROM llm_calls")[0]["n"] > 0


def _board_line(output: str, row: dict[str, Any]) -> str:
    """The leaderboard line of a ranked row: rank, id, name."""
    pattern = rf"^\s*\d+\s+{row['id']}\s+{re.escape(row['name'])}\s"
    lines = [line for line in output.splitlines() if re.match(pattern, line)]
    assert len(lines) == 1, (row["id"], row["name"], output)
    return lines[0]


@pytest.mark.parametrize("run", RUNS)
def test_leaderboard_ranks_the_old_multi_seed_rows(runs_dir: Path, run: str) -> None:
    output = cli("leaderboard", runs_dir / run).output
    ranked = [row for row in candidates(run) if multi_seed(row)]
    assert ranked
    baseline = meta(run, "config")["search"]["baseline"]
    assert f"vs {baseline}" in output
    means = []
    for row in ranked:
        line = _board_line(output, row)
        stats = row["stats"]
        shown = re.search(rf"\s({NUMBER})±({NUMBER})\s", line)
        assert shown, line
        assert close_to(shown.group(1), stats["mean"], 4), (line, stats["mean"])
        assert close_to(shown.group(2), (stats["ci"][1] - stats["ci"][0]) / 2, 2), (line, stats["ci"])
        verdict = stats["paired"]["verdict"]
        assert re.search(rf"\s{re.escape({'inconclusive': '~'}.get(verdict, verdict))}\s", line), (line, verdict)
        means.append((output.index(line), stats["mean"]))
    shown_means = [mean for _, mean in sorted(means)]
    assert shown_means == sorted(shown_means, reverse=True)  # ranked by the mean (search.rank_by: mean)
    for row in candidates(run):
        if not multi_seed(row) and row["name"]:
            assert not re.search(rf"^\s*\d+\s+{row['id']}\s+{re.escape(row['name'])}\s", output, re.MULTILINE)


@pytest.mark.parametrize("run", RUNS)
def test_leaderboard_all_lists_the_old_unranked_rows(runs_dir: Path, run: str) -> None:
    output = cli("leaderboard", runs_dir / run, "--all").output
    others = [row for row in candidates(run) if not multi_seed(row)]
    assert others and f"not ranked ({len(others)})" in output
    for row in others:
        pattern = rf"^\s*{row['id']}\s+{re.escape(row['name'] or '')}\s+\d+\s+{row['status']}\s+{row['stage']}\s"
        line = next((line for line in output.splitlines() if re.match(pattern, line)), None)
        assert line is not None, (row, output)
        assert row["reason"][:30] in line, (row["reason"], line)
    for row in candidates(run):
        if multi_seed(row):
            _board_line(output, row)


@pytest.mark.parametrize("run", RUNS)
def test_leaderboard_json_keeps_the_stored_scores(runs_dir: Path, run: str) -> None:
    entries = [json.loads(line) for line in cli("leaderboard", runs_dir / run, "--all", "--json").stdout.splitlines()]
    stored = {row["id"]: row for row in candidates(run)}
    assert {entry["id"] for entry in entries} == set(stored)
    for entry in entries:
        row = stored[entry["id"]]
        assert (entry["name"], entry["status"], entry["score"]) == (row["name"], row["status"], row["score"])
        assert (entry["rank"] is not None) == multi_seed(row)


def _show_multi_seed(runs_dir: Path, run: str, row: dict[str, Any]) -> str:
    output = cli("show", runs_dir / run, str(row["id"])).output
    stats, paired = row["stats"], row["stats"]["paired"]
    header = output.splitlines()[0]
    assert header.startswith(f"#{row['id']} {row['name']}  status=ok"), header
    shown = re.search(rf"score=({NUMBER})±({NUMBER})", header)
    assert shown and close_to(shown.group(1), stats["mean"], 4), (header, stats["mean"])
    seeds_line = next(line for line in output.splitlines() if line.startswith("seeds: "))
    assert str(stats["seeds"]) in seeds_line
    for score in stats["scores"]:
        assert f"{score:.4g}" in seeds_line, (score, seeds_line)
    line = next(line for line in output.splitlines() if line.startswith(f"vs {paired['baseline']}: "))
    numbers = re.fullmatch(rf"vs \w+: ({NUMBER}) \[({NUMBER}), ({NUMBER})\] -> (\w+)", line)
    assert numbers, line
    assert numbers.group(4) == paired["verdict"]
    for shown_value, value in zip(numbers.groups()[:3], [paired["mean"], *paired["ci"]], strict=True):
        assert abs(float(shown_value) - value) <= 0.5e-3 + 1e-12, (line, paired)
    for key, value in row["metrics"].items():
        assert f"  {key}: {value:.6g}" in output
    assert f"candidates/{row['id']}_{row['name']}.py" in output
    return output


def test_show_an_old_multi_seed_row_with_its_paired_difference(runs_dir: Path) -> None:
    rows = [row for row in candidates("evolve") if multi_seed(row) and row["stats"].get("rungs")]
    row = max(rows, key=lambda row: abs(row["stats"]["paired"]["mean"]))  # a difference that is not zero
    assert row["stats"]["paired"]["mean"] != 0
    _show_multi_seed(runs_dir, "evolve", row)


@pytest.mark.parametrize("run", RUNS)
def test_show_the_old_confirmed_rows(runs_dir: Path, run: str) -> None:
    stored = {row["id"]: row for row in candidates(run)}
    confirmed = query(run, "SELECT candidate_id, task, beta, seed, status, score FROM confirmations ORDER BY id")
    for candidate_id in sorted({done["candidate_id"] for done in confirmed}):
        output = _show_multi_seed(runs_dir, run, stored[candidate_id])
        for done in (done for done in confirmed if done["candidate_id"] == candidate_id):
            assert (
                f"confirmation: {done['task']} beta={done['beta']:g} seed={done['seed']}: {done['status']} "
                f"{done['score']:.4g}" in output
            ), (dict(done), output)


def test_show_an_old_row_stopped_at_rung_zero(runs_dir: Path) -> None:
    row = next(row for row in candidates("evolve") if row["status"] == "ok" and row["score"] is None)
    assert [rung["rung"] for rung in row["stats"]["rungs"]] == [0]
    output = cli("show", runs_dir / "evolve", str(row["id"])).output
    assert output.startswith(f"#{row['id']} {row['name']}  status=ok")
    assert f"reason ({row['stage']}): {row['reason']}" in output
    assert f"  reward: {row['metrics']['reward']:.6g}" in output


@pytest.mark.parametrize(("run", "status"), [("llm", "rejected"), ("evolve", "duplicate"), ("llm", "duplicate")])
def test_show_the_old_rows_that_never_trained(runs_dir: Path, run: str, status: str) -> None:
    rows = [row for row in candidates(run) if row["status"] == status]
    assert rows
    calls = {row["id"]: dict(row) for row in query(run, "SELECT id, model, reply FROM llm_calls")}
    prompt_ids = {row["id"]: row["prompt_id"] for row in query(run, "SELECT id, prompt_id FROM candidates")}
    for row in rows:
        output = cli("show", runs_dir / run, str(row["id"])).output
        assert output.startswith(f"#{row['id']} {row['name'] or ''}  status={status}"), output
        assert f"reason ({row['stage']}): {row['reason']}" in output
        call = calls.get(prompt_ids[row["id"]])
        if call is not None:  # the LLM exchange behind the row, archived by 8d4392a
            assert f"model {call['model']}" in output
            assert call["reply"].strip().splitlines()[0][:40] in output


@pytest.mark.parametrize("run", RUNS)
def test_report_of_an_old_run(runs_dir: Path, run: str) -> None:
    cli("report", runs_dir / run)
    text = (runs_dir / run / "report.html").read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html")
    for row in candidates(run):
        if row["name"]:
            assert row["name"] in text, row["name"]
    for row in candidates(run):
        if multi_seed(row):
            assert f"{row['stats']['mean']:.4g}" in text, row
    assert meta(run, "confirmation")["sentence"] in text


def test_runs_lists_the_old_runs(runs_dir: Path) -> None:
    output = cli("runs", runs_dir).output
    assert "runs in " in output
    listed = {
        json.loads(line)["run_dir"]: json.loads(line) for line in cli("runs", runs_dir, "--json").stdout.splitlines()
    }
    assert {Path(path).name for path in listed} == set(RUNS)
    for path, run_info in listed.items():
        run = Path(path).name
        rows = candidates(run)
        counts = {status: sum(row["status"] == status for row in rows) for status in ("ok", "rejected", "duplicate")}
        assert {status: run_info["counts"].get(status, 0) for status in counts} == counts
        assert run_info["state"] == "finished" and run_info["task"] == "sentiment"
        assert run_info["generations_done"] == meta(run, "state")["generations"]
        best = max((row for row in rows if multi_seed(row)), key=lambda row: row["stats"]["mean"])
        assert run_info["best"]["id"] == best["id"]
        assert f"{counts['ok']}/{counts['rejected']}/{counts['duplicate']}/0" in output
        assert f"{best['stats']['mean']:.4g} #{best['id']}" in output
