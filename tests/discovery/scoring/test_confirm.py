"""Confirmation of the winners on held-out seeds, through the real loop on the known noise model of
``tests.noisy_scores``: the seeds are the held-out ones (disjoint from the search's), the verdicts flip with the
candidate's true quality, the run summary ends with the sentence, and a SIGKILLed confirmation resumes without
retraining the seeds it had finished."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.seeds import heldout_seeds
from lossforge.discovery.storage.archive import Archive

from tests.noisy_scores import TASK, count_rows, run, run_until_killed

SEARCH_SEEDS = [11, 12, 13]


def _config(tmp_path: Path, plan: list[tuple[str, float, float]], name: str = "run") -> dict[str, Any]:
    return {
        "plan": {1: plan},
        "out": str(tmp_path / name),
        "seed": 11,
        "search": {
            "generations": 1,
            "population": len(plan),
            "seed_candidates": ["dpo", "hinge", "ipo"],
            "confirm": {"top_k": 2, "seeds": 5},
        },
        "training": {"task": TASK, "seeds": 3, "steps": 8},
    }


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))  # noisy scores never reach a real cache


def test_winner_confirmed_on_heldout_seeds_and_summary_sentence(tmp_path: Path) -> None:
    summary = run(_config(tmp_path, [("strong", 0.2, 0.1), ("even", 0.0, 0.2), ("weak", -0.2, 0.3)]), tmp_path / "run")
    report = summary.confirmation
    assert report is not None and summary.to_dict()["confirmed"] == report["sentence"]
    assert list(summary.to_dict())[-1] == "confirmed"  # the JSON summary ends with the sentence
    held = heldout_seeds(11, 5)
    assert report["seeds"] == list(held) and not set(held) & set(SEARCH_SEEDS)
    with Archive.open(tmp_path / "run") as archive:
        names = {row.id: row.name for row in archive.candidates()}
        trained = archive.confirmations()
        assert {row["seed"] for row in trained} == set(held)
        # top 2 discovered (strong, even), the best library loss of generation 0 (hinge), the baseline (dpo).
        assert sorted(names[row["candidate_id"]] for row in trained if row["seed"] == held[0]) == [
            "dpo",
            "even",
            "hinge",
            "strong",
        ]
        assert archive.get_meta("confirmation")["sentence"] == report["sentence"]
    by_name = {entry["name"]: entry for entry in report["results"]}
    assert {e["role"] for e in report["results"]} == {"candidate", "baseline", "best_library"}
    assert by_name["hinge"]["role"] == "best_library" and by_name["dpo"]["role"] == "baseline"
    assert by_name["strong"]["paired"]["verdict"] == "better" and by_name["even"]["paired"]["verdict"] == "inconclusive"
    assert by_name["strong"]["vs_best_library"]["baseline"] == "hinge"
    assert by_name["dpo"]["paired"] is None and len(by_name["strong"]["scores"]) == 5
    winner = report["winner"]
    assert winner["name"] == "strong"
    even, hinge = by_name["even"], by_name["hinge"]
    assert report["sentence"] == (
        f"#{winner['candidate_id']} strong beats dpo on {TASK} by {_interval(winner['paired'])} over 5 held-out "
        f"seeds (also confirmed: #{even['candidate_id']} even {_interval(even['paired'])} inconclusive); the best "
        f"library loss #{hinge['candidate_id']} hinge beats dpo by {_interval(hinge['paired'])}; "
        f"#{winner['candidate_id']} against it: {_interval(winner['vs_best_library'])}, better"
    )


def _interval(comparison: dict[str, Any]) -> str:
    lo, hi = comparison["ci"]
    return f"{comparison['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def test_no_winner_when_nothing_is_better_by_construction(tmp_path: Path) -> None:
    summary = run(_config(tmp_path, [("even", 0.0, 0.2), ("weak", -0.2, 0.3)]), tmp_path / "run")
    assert summary.confirmation is not None
    by_name = {e["name"]: e for e in summary.confirmation["results"]}
    even, weak, hinge = by_name["even"], by_name["weak"], by_name["hinge"]
    # What was confirmed, and that the library's best (hinge: LIBRARY_QUALITY 0.03 over dpo's 0) beats dpo.
    assert summary.confirmation["sentence"] == (
        f"no candidate beats dpo outside the noise on {TASK} over 5 held-out seeds (confirmed: "
        f"#{even['candidate_id']} even {_interval(even['paired'])} inconclusive, #{weak['candidate_id']} weak "
        f"{_interval(weak['paired'])} worse); the best library loss #{hinge['candidate_id']} hinge beats dpo by "
        f"{_interval(hinge['paired'])}"
    )
    assert summary.confirmation["winner"] is None
    verdicts = {e["name"]: e["paired"]["verdict"] for e in summary.confirmation["results"] if e["paired"]}
    assert verdicts["weak"] == "worse" and verdicts["even"] == "inconclusive" and verdicts["hinge"] == "better"


def test_the_sentence_says_when_the_baseline_is_also_the_best_library_loss(tmp_path: Path) -> None:
    data = _config(tmp_path, [("even", 0.0, 0.2)])
    data["search"]["seed_candidates"] = ["dpo", "ipo"]  # ipo: LIBRARY_QUALITY -0.3, far below dpo
    summary = run(data, tmp_path / "run")
    assert summary.confirmation is not None
    (even,) = [e for e in summary.confirmation["results"] if e["role"] == "candidate"]
    assert {e["role"] for e in summary.confirmation["results"]} == {"candidate", "baseline"}
    assert summary.confirmation["sentence"] == (
        f"no candidate beats dpo outside the noise on {TASK} over 5 held-out seeds (confirmed: "
        f"#{even['candidate_id']} even {_interval(even['paired'])} inconclusive); dpo was also the best library loss"
    )


def test_killed_confirmation_resumes_without_retraining_finished_seeds(tmp_path: Path) -> None:
    plan = [("strong", 0.2, 0.1), ("even", 0.0, 0.2)]
    run_dir = tmp_path / "killed"
    run_until_killed(
        _config(tmp_path, plan, "killed"),
        run_dir,
        log=tmp_path / "before.log",
        sleep=0.2,
        ready=lambda d: count_rows(d, "SELECT COUNT(*) FROM confirmations") >= 5,
        what="the confirmation's fifth training",
    )
    with Archive.open(run_dir) as archive:
        done = {(row["candidate_id"], row["seed"]) for row in archive.confirmations()}
        code = {row.id: row.code for row in archive.candidates()}
    assert 5 <= len(done) < 20  # killed in the middle: 4 candidates x 5 held-out seeds in all

    os.environ["NOISY_LOG"] = str(tmp_path / "after.log")
    try:
        summary = run(_config(tmp_path, plan, "killed"), run_dir, resume=True)
    finally:
        del os.environ["NOISY_LOG"]
    import hashlib

    retrained = {tuple(line.split()[::3][:2]) for line in (tmp_path / "after.log").read_text().splitlines()}
    finished = {(hashlib.sha256((code[cid] or "").encode()).hexdigest()[:12], str(seed)) for cid, seed in done}
    assert not finished & retrained  # nothing finished before the kill was trained again
    with Archive.open(run_dir) as archive:
        assert len(archive.confirmations()) == 20
    reference = run(_config(tmp_path, plan, "reference"), tmp_path / "reference")
    assert summary.confirmation is not None and reference.confirmation is not None
    assert summary.confirmation["sentence"] == reference.confirmation["sentence"]
    assert [e["scores"] for e in summary.confirmation["results"]] == [
        e["scores"] for e in reference.confirmation["results"]
    ]
