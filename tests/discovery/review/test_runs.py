"""Review commands on finished runs the suite builds with the real loop on the tiny task: an LLM run through the
loopback OpenAI server (ok, rejected, duplicate rows from the loop; failed and diverged rows, multi-seed stats
and a confirmation written with the Archive API) and an `evolve` run. `runs`, `leaderboard`, `show`,
`promote` (then `lossforge train` on the promoted name) and the one-line exit-2 errors.

The runs are built once per session (tests/review_runs.py, the ``built`` fixture of this folder's conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lossforge.discovery.storage.archive import Archive

from tests.paths import ROOT
from tests.review_runs import TINY, assert_usage_error, cli
from tests.scripted_llm import LEAKY


def _lines_fit(text: str, width: int = 100) -> None:
    too_wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not too_wide, too_wide


def test_runs_lists_each_run_with_state_progress_counts_and_cost(built: dict[str, Path]) -> None:
    result = cli("runs", str(built["runs"]), "--json")
    assert result.exit_code == 0, result.output
    runs = {Path(r["run_dir"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(runs) == {"evolve", "llm"}
    llm, evolve = runs["llm"], runs["evolve"]
    assert (llm["proposer"], llm["model"], llm["task"]) == ("openai", "fake-model", TINY)
    assert (llm["generations_done"], llm["generations_asked"]) == (2, 2)
    counts = llm["counts"]
    assert (counts["rejected"], counts["duplicate"], counts["failed"], counts["diverged"]) == (2, 1, 1, 1)
    assert counts["ok"] == 4 + 3  # the seeds, then shifted, squared and mixed
    assert llm["llm"]["calls"] == 6 and llm["llm"]["tokens"] > 0 and llm["llm"]["cost_usd"] > 0
    assert llm["state"] == evolve["state"] == "finished" and llm["started"].endswith("Z")
    assert llm["confirmation"]["winner"] == "squared" and llm["confirmation"]["verdict"] == "better"
    assert (evolve["proposer"], evolve["llm"]["calls"], evolve["generations_done"]) == ("evolve", 0, 1)

    table = cli("runs", str(built["runs"]))
    assert table.exit_code == 0 and "evolve" in table.stdout and "openai:fa" in table.stdout
    assert (
        "7/2/1/2" in table.stdout and "6/0/0/0" in table.stdout and "0.0096" not in table.stdout.split("evolve")[1][:80]
    )
    assert " ".join(table.stdout.split()).count("finished") == 2 and "squared" in table.stdout
    _lines_fit(table.stdout)


def test_leaderboard_top_all_metrics_and_json(built: dict[str, Path]) -> None:
    run = str(built["llm"])
    top = cli("leaderboard", run, "--top", "2")
    assert top.exit_code == 0, top.output
    _lines_fit(top.stdout)
    assert "train/" not in top.stdout  # training-log metrics only on request
    assert "margin" in top.stdout and "chosen_logp" in top.stdout  # the tiny task declares none: its own metrics
    ranked = [json.loads(line) for line in cli("leaderboard", run, "--top", "2", "--json").stdout.splitlines()]
    assert [e["rank"] for e in ranked] == [1, 2] and all(e["status"] == "ok" for e in ranked)

    everything = cli("leaderboard", run, "--all")
    assert everything.exit_code == 0 and "not ranked (5)" in everything.stdout
    assert "0.2±0.1" in everything.stdout and "better" in everything.stdout  # squared: mean ±CI, verdict
    assert "boom from the candidate" in everything.stdout and "`os`" in everything.stdout
    _lines_fit(everything.stdout)
    entries = [json.loads(line) for line in cli("leaderboard", run, "--all", "--json").stdout.splitlines()]
    with Archive.open(built["llm"]) as archive:
        assert len(entries) == len(archive.candidates())
    by_name = {e["name"]: e for e in entries}
    assert {"rank", "id", "score", "metrics", "fingerprint", "parents", "stage", "tags", "reason"} <= set(
        by_name["dpo"]
    )
    assert "rho-only" in by_name["dpo"]["tags"] and "batch-coupled" in by_name["kto_pair"]["tags"]
    assert by_name["raises"]["reason"] == "ValueError: boom from the candidate" and by_name["raises"]["rank"] is None
    assert by_name["squared"]["stats"]["paired"]["verdict"] == "better"

    wide = cli("leaderboard", run, "--metrics", "all")
    assert wide.exit_code == 0 and "train/loss" in wide.stdout
    assert_usage_error(cli("leaderboard", run, "--metrics", "nope"), "--metrics", "'nope'", "margin")


def test_show_lineage_llm_exchange_repairs_and_plain_code(built: dict[str, Path]) -> None:
    with Archive.open(built["llm"]) as archive:
        rows = {r.proposal_key: r for r in archive.candidates()}
    squared = rows["g1-i1-r1"]
    data = json.loads(cli("show", str(built["llm"]), str(squared.id), "--json").stdout)
    assert [a["status"] for a in data["attempts"]] == ["rejected", "ok"]
    assert "`os`" in data["attempts"][0]["reason"]
    assert data["exchange"]["model"] == "fake-model" and "squared" in data["exchange"]["reply"]
    assert any("repair round 1 of 1" in m["content"] for m in data["exchange"]["messages"])
    assert data["headline"] == ["chosen_logp", "margin"] and list(data["metrics"])[:2] == data["headline"]
    assert data["stats"]["mean"] == 0.2 and [c["seed"] for c in data["confirmations"]] == [7]

    text = cli("show", str(built["llm"]), str(squared.id))
    assert text.exit_code == 0, text.output
    assert "\x1b[" not in text.stdout and "def loss(" in text.stdout  # piped: plain code
    assert "round 0: " in text.stdout and "--- reply ---" in text.stdout and "vs dpo" in text.stdout
    assert "confirmation: tests.tiny_task:TinyTask beta=0.1 seed=7: ok 0.1" in text.stdout
    assert "characters clipped" in text.stdout  # the rendered prompt is long
    full = cli("show", str(built["llm"]), str(squared.id), "--prompt")
    assert "characters clipped" not in full.stdout and len(full.stdout) > len(text.stdout)
    prompt = data["exchange"]["messages"][-1]["content"]
    assert prompt in full.stdout

    with Archive.open(built["evolve"]) as archive:
        child = next(r for r in archive.candidates() if r.parents)
    parent = json.loads(cli("show", str(built["evolve"]), str(child.parents[0]), "--json").stdout)
    assert child.id in [c["id"] for c in parent["lineage"]["children"]]
    shown = json.loads(cli("show", str(built["evolve"]), str(child.id), "--json").stdout)
    assert shown["lineage"]["parents"][0]["score"] == parent["score"] and shown["exchange"] is None


def test_unknown_dirs_ids_and_non_runs_get_one_line_and_exit_2(built: dict[str, Path], tmp_path: Path) -> None:
    missing, plain, broken = tmp_path / "nowhere", tmp_path / "plain", tmp_path / "broken"
    plain.mkdir()
    broken.mkdir()
    (broken / "archive.sqlite").write_text("not a database")
    for command in (["leaderboard"], ["show", "_", "1"], ["report"], ["plot"], ["promote", "_", "1"]):
        for directory, needle in (
            (missing, "does not exist"),
            (plain, "no archive.sqlite"),
            (broken, "not a readable lossforge archive"),
        ):
            args = [command[0], str(directory), *command[2:]] if len(command) > 1 else [command[0], str(directory)]
            assert_usage_error(cli(*args), needle)
    assert_usage_error(cli("runs", str(missing)), "is not a directory")
    assert_usage_error(cli("show", str(built["llm"]), "999"), "no candidate 999", "ids are 1..")
    assert_usage_error(cli("promote", str(built["llm"]), "999"), "no candidate 999")


def test_promote_with_name_then_train_it_by_name(built: dict[str, Path], tmp_path: Path) -> None:
    with Archive.open(built["llm"]) as archive:
        rows = {r.name: r for r in archive.candidates()}
    result = cli("promote", str(built["llm"]), str(rows["mixed"].id), "--name", "review_winner", "--json")
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.stdout)["path"])
    assert path == Path(os.environ["LOSSFORGE_HOME"]) / "candidates" / "review_winner.py"
    assert_usage_error(
        cli("promote", str(built["llm"]), str(rows["mixed"].id), "--name", "review_winner"), "already exists", "--force"
    )
    assert_usage_error(cli("promote", str(built["llm"]), str(rows["raises"].id)), "status 'failed'")
    assert_usage_error(cli("promote", str(built["llm"]), str(rows["squared"].id), "--name", "ipo"), "built-in")

    library = tmp_path / "candidates"
    first = cli("promote", str(built["llm"]), str(rows["squared"].id), "--library", str(library))
    assert first.exit_code == 0 and (library / "squared.py").is_file()
    forced = cli(
        "promote", str(built["llm"]), str(rows["mixed"].id), "--name", "squared", "--library", str(library), "--force"
    )
    assert forced.exit_code == 0 and "candidate " + str(rows["mixed"].id) in (library / "squared.py").read_text()

    launched = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lossforge.discovery.cli import main; main()",
            "train",
            "review_winner",
            "--task",
            TINY,
            "--steps",
            "1",
            "--eval-samples",
            "4",
            "--threads",
            "1",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        check=False,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert json.loads(launched.stdout)["status"] == "ok"


def test_promote_rechecks_the_code_before_writing(tmp_path: Path) -> None:
    with Archive.open(tmp_path / "run") as archive:
        cid = archive.add_candidate(generation=1, idx=0, name="sneaky", code=LEAKY, status="ok", score=1.0)
    library = tmp_path / "library"
    assert_usage_error(
        cli("promote", str(tmp_path / "run"), str(cid), "--library", str(library)),
        "fails the check at stage 'static'",
        "nothing was written",
    )
    assert not library.exists()
