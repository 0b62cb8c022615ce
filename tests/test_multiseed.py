"""Multi-seed scores through the real loop (real checks, archive and executor) on the known noise model of
``tests.noisy_scores``: every stored per-seed score, mean, interval, paired difference and verdict equals its
closed-form value; the history shown to the proposer carries the intervals; rank_by lcb ranks by the bound."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.archive import Archive
from lossforge.discovery.loop import _history

from tests.noisy_scores import TASK, expected_score, run

T975_DF3 = 3.182446305284263  # Student t, 0.975 quantile, 3 degrees of freedom (four seeds)
PLAN = {1: [("strong", 0.2, 0.1), ("weak", -0.2, 0.2), ("even", 0.001, 0.3)]}


def _config(tmp_path: Path, **search: Any) -> dict[str, Any]:
    return {
        "plan": PLAN, "search": {"generations": 1, "population": 3, "seed_candidates": ["dpo", "hinge"], **search},
        "training": {"task": TASK, "seeds": 4, "steps": 8}, "seed": 11, "out": str(tmp_path / "run"),
    }  # fmt: skip


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Noisy scores must never reach the shared seed cache of real runs.
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))


def _closed_form(values: list[float]) -> tuple[float, float, list[float]]:
    mean = sum(values) / len(values)
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
    return mean, se, [mean - T975_DF3 * se, mean + T975_DF3 * se]


@pytest.mark.usefixtures("isolated_cache")
def test_stored_statistics_match_the_noise_model(tmp_path: Path) -> None:
    summary = run(_config(tmp_path), tmp_path / "run")
    assert summary.counts == {"ok": 5}
    seeds = [11, 12, 13, 14]
    with Archive.open(tmp_path / "run") as archive:
        rows = {row.name: row for row in archive.candidates()}
        dpo = rows["dpo"]
        for name, row in rows.items():
            stats = row.stats
            assert stats is not None and stats["n"] == 4 and stats["seeds"] == seeds and stats["rung"] is None
            expected = [expected_score(row.code or "", s) for s in seeds]
            assert stats["scores"] == pytest.approx(expected, abs=1e-12)
            mean, se, ci = _closed_form(expected)
            assert (stats["mean"], stats["stderr"]) == pytest.approx((mean, se), abs=1e-12)
            assert stats["ci"] == pytest.approx(ci, abs=1e-9)
            assert row.score == pytest.approx(mean, abs=1e-12)  # rank_by: mean
            assert [p["score"] for p in stats["per_seed"]] == pytest.approx(expected)
            paired = stats["paired"]
            diffs = [x - b for x, b in zip(expected, (expected_score(dpo.code or "", s) for s in seeds))]
            assert paired["baseline"] == "dpo" and paired["baseline_id"] == dpo.id
            assert paired["diffs"] == pytest.approx(diffs, abs=1e-12)
            if name != "dpo":
                d_mean, _, d_ci = _closed_form(diffs)
                assert paired["mean"] == pytest.approx(d_mean) and paired["ci"] == pytest.approx(d_ci, abs=1e-9)
                want = "better" if d_ci[0] > 0 else "worse" if d_ci[1] < 0 else "inconclusive"
                assert paired["verdict"] == want
        assert rows["strong"].stats["paired"]["verdict"] == "better"  # type: ignore[index]
        assert rows["weak"].stats["paired"]["verdict"] == "worse"  # type: ignore[index]
        assert rows["even"].stats["paired"]["verdict"] == "inconclusive"  # type: ignore[index]
        # Common random numbers: the seed's shared noise cancels in the paired interval, not in the unpaired one.
        strong = rows["strong"].stats
        assert strong["paired"]["ci"][1] - strong["paired"]["ci"][0] < 0.5 * (strong["ci"][1] - strong["ci"][0])  # type: ignore[index]

        # The proposer's history shows the interval and the paired difference, so the LLM can see the noise.
        history = {entry.name: entry for entry in _history(archive, 2, 5, 5)}
        shown = history["strong"].metrics
        assert shown["score_ci_low"] == pytest.approx(strong["ci"][0]) and shown["vs_dpo"] == pytest.approx(strong["paired"]["mean"])  # type: ignore[index]
        assert "vs_dpo" not in history["dpo"].metrics


@pytest.mark.usefixtures("isolated_cache")
def test_rank_by_lcb_stores_the_lower_bound_as_the_score(tmp_path: Path) -> None:
    run(_config(tmp_path, rank_by="lcb"), tmp_path / "run")
    with Archive.open(tmp_path / "run") as archive:
        for row in archive.candidates():
            assert row.stats is not None and row.score == pytest.approx(row.stats["ci"][0])
        assert archive.best(1)[0].name == "strong"
