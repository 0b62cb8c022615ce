"""Review commands on finished runs the suite builds with the real loop on the tiny task: an LLM run through the
loopback OpenAI server (ok, rejected, duplicate rows from the loop; failed and diverged rows, multi-seed stats
and a confirmation written with the Archive API) and an `evolve` run. `runs`, `leaderboard`, `show`,
`promote` (then `lossforge train` on the promoted name) and the one-line exit-2 errors.

The runs are built once per session (``review_runs``); tests/discovery/review/test_report.py uses them too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.cli import app
from lossforge.discovery.config import build_config
from lossforge.discovery.loop import run_discovery
from lossforge.discovery.progress import Progress
from lossforge.discovery.review.report import GenerationReports
from lossforge.discovery.stats.seed_stats import SeedStats
from lossforge.discovery.storage.archive import Archive
from typer.testing import CliRunner

from tests.openai_server import OpenAIServer
from tests.paths import ROOT
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


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return review_runs(tmp_path_factory.mktemp("review"))


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def assert_usage_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for needle in needles:
        assert needle in result.stderr, result.stderr


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
