"""A multi-seed candidate killed in the middle of its seeds resumes seed by seed: the seeds it had finished
(the archive's ``seed_runs``) are not trained again, the others are, and the resumed run's statistics equal an
uninterrupted run's. Through the real loop in a subprocess that is SIGKILLed, on ``tests.noisy_scores``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.storage.archive import Archive

from tests.noisy_scores import TASK, count_rows, run, run_until_killed

SEEDS = [11, 12, 13, 14, 15]


def _config(out: Path) -> dict[str, Any]:
    return {
        "plan": {1: [("strong", 0.2, 0.1)]},
        "out": str(out),
        "seed": 11,
        "search": {"generations": 1, "population": 1, "seed_candidates": ["dpo", "hinge"], "confirm": {"top_k": 0}},
        "training": {"task": TASK, "seeds": len(SEEDS), "steps": 8},
    }


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))  # noisy scores never reach a real cache


FINISHED_GENERATION_1_SEEDS = (
    "SELECT COUNT(*) FROM seed_runs JOIN candidates ON candidates.id = seed_runs.candidate_id "
    "WHERE candidates.generation = 1"
)


def _trained(log: Path) -> list[tuple[str, int]]:
    """(code hash, seed) of each training the noisy stand-in logged."""
    return [(parts[0], int(parts[3])) for parts in (line.split() for line in log.read_text().splitlines())]


def test_killed_multi_seed_candidate_resumes_without_retraining_finished_seeds(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    run_until_killed(
        _config(run_dir),
        run_dir,
        log=tmp_path / "before.log",
        sleep=0.3,
        ready=lambda d: count_rows(d, FINISHED_GENERATION_1_SEEDS) >= 2,
        what="the second finished seed of generation 1",
    )
    with Archive.open(run_dir) as archive:
        (row,) = archive.candidates(generation=1)
        finished = set(archive.seed_runs(row.id, 8))
        assert archive.seed_runs(row.id, None) == {}  # keyed by the steps it was trained at
    assert row.status == "pending" and 2 <= len(finished) < len(SEEDS)  # killed between its seeds
    own = hashlib.sha256((row.code or "").encode()).hexdigest()[:12]

    os.environ["NOISY_LOG"] = str(tmp_path / "after.log")
    try:
        resumed = run(_config(run_dir), run_dir, resume=True)
    finally:
        del os.environ["NOISY_LOG"]
    retrained = {seed for code, seed in _trained(tmp_path / "after.log") if code == own}
    assert retrained == set(SEEDS) - finished  # the finished seeds were not trained again, the others were

    reference = run(_config(tmp_path / "reference"), tmp_path / "reference")
    assert resumed.counts == reference.counts == {"ok": 3}
    with Archive.open(run_dir) as archive, Archive.open(tmp_path / "reference") as ref:
        got = [
            (r.name, r.status, r.score, r.stats and r.stats.scores, r.stats and r.stats.paired)
            for r in archive.candidates()
        ]
        want = [
            (r.name, r.status, r.score, r.stats and r.stats.scores, r.stats and r.stats.paired)
            for r in ref.candidates()
        ]
    assert got == want
