"""Successive halving on the known noise model of ``tests.noisy_scores``: the rung-0 scores are the closed-form
low-fidelity values, exactly the best half is promoted and trained at the full budget on every seed, the rest
keep their rung results and leave the rankings; without ``search.fidelity`` every candidate trains once per
seed at the full budget, with the scores the noise model gives."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.loop import _history
from lossforge.discovery.search.ranking import best_first
from lossforge.discovery.storage.archive import Archive

from tests.noisy_scores import FULL_STEPS, TASK, expected_score, run

PLAN = [("a", 0.3, 0.1), ("b", -0.1, 0.2), ("c", 0.2, 0.3), ("d", 0.0, 0.4), ("e", -0.3, 0.5), ("f", 0.1, 0.6)]
SEEDS = [21, 22, 23]


def _config(tmp_path: Path, **search: Any) -> dict[str, Any]:
    return {
        "plan": {1: PLAN},
        "out": str(tmp_path / "run"),
        "seed": 21,
        "search": {
            "generations": 1,
            "population": len(PLAN),
            "seed_candidates": ["dpo", "hinge"],
            "confirm": {"top_k": 0},
            **search,
        },
        "training": {"task": TASK, "seeds": 3, "steps": FULL_STEPS},
    }


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NOISY_LOG", str(tmp_path / "trainings.log"))


def _trainings(tmp_path: Path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "trainings.log").read_text().splitlines()]


def test_halving_promotes_the_best_half_by_the_closed_form_rung_scores(tmp_path: Path) -> None:
    run(_config(tmp_path, fidelity={"steps_fractions": [0.25, 1.0], "keep": 0.5}), tmp_path / "run")
    low_steps = round(FULL_STEPS * 0.25)
    with Archive.open(tmp_path / "run") as archive:
        rows = {row.name: row for row in archive.candidates(generation=1)}
        low = {name: expected_score(row.code or "", SEEDS[0], low_steps) for name, row in rows.items()}
        winners = sorted(low, key=lambda name: -low[name])[: math.ceil(0.5 * len(PLAN))]
        for name, row in rows.items():
            stats = row.stats
            assert stats is not None and stats.rungs is not None
            assert stats.rungs[0].to_json() == {
                "rung": 0,
                "steps": low_steps,
                "status": "ok",
                "seeds": [SEEDS[0]],
                "scores": [pytest.approx(low[name])],
                "mean": pytest.approx(low[name]),
            }
            if name in winners:
                full = [expected_score(row.code or "", s) for s in SEEDS]
                assert stats.rung == 1 and stats.scores == pytest.approx(full)
                assert row.score == pytest.approx(sum(full) / 3) and stats.paired is not None
                assert stats.paired.baseline == "dpo"
            else:
                assert row.status == "ok" and row.score is None and stats.rung == 0 and stats.paired is None
                assert "not promoted past rung 0" in (row.reason or "")
        assert {row.name for row in best_first(archive.candidates())[:10] if row.generation == 1} == set(winners)
        # The rungs are in the history a proposer is shown.
        shown = {entry.name: entry for entry in _history(archive, 2, 10, 10)}
        assert all(shown[name].metrics["rung0_score"] == pytest.approx(low[name]) for name in rows)
    # Cost: 6 rung-0 runs on one seed at a quarter of the steps, then 3 x 3 full runs (not 6 x 3).
    generation_1 = [t for t in _trainings(tmp_path) if t[0] in {_hash(r.code) for r in rows.values()}]
    assert sorted(int(t[4]) for t in generation_1) == [low_steps] * 6 + [FULL_STEPS] * 9


def _hash(code: str | None) -> str:
    import hashlib

    return hashlib.sha256((code or "").encode()).hexdigest()[:12]


def test_without_fidelity_every_candidate_trains_each_seed_at_the_full_budget(tmp_path: Path) -> None:
    run(_config(tmp_path), tmp_path / "run")
    with Archive.open(tmp_path / "run") as archive:
        for row in archive.candidates():
            expected = [expected_score(row.code or "", s) for s in SEEDS]
            assert row.status == "ok" and row.stats is not None and row.stats.rung is None
            assert row.score == pytest.approx(sum(expected) / 3) and "rungs" not in row.stats.to_json()
    assert sorted(int(t[4]) for t in _trainings(tmp_path)) == [FULL_STEPS] * 3 * (len(PLAN) + 2)
    assert os.environ["NOISY_LOG"]
