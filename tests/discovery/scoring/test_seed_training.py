"""Multi-seed scores through the real loop (real checks, archive and executor) on the known noise model of
``tests.noisy_scores``: every stored per-seed score, mean, interval, paired difference and verdict equals its
closed-form value; the history shown to the proposer carries the intervals; rank_by lcb ranks by the bound."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.loop import _history
from lossforge.discovery.search.ranking import best_first
from lossforge.discovery.storage.archive import Archive

from tests.noisy_scores import TASK, expected_score, run

T975_DF3 = 3.182446305284263  # Student t, 0.975 quantile, 3 degrees of freedom (four seeds)
PLAN = {1: [("strong", 0.2, 0.1), ("weak", -0.2, 0.2), ("even", 0.001, 0.3)]}


def _config(tmp_path: Path, **search: Any) -> dict[str, Any]:
    return {
        "plan": PLAN,
        "search": {"generations": 1, "population": 3, "seed_candidates": ["dpo", "hinge"], **search},
        "training": {"task": TASK, "seeds": 4, "steps": 8},
        "seed": 11,
        "out": str(tmp_path / "run"),
    }


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
            assert stats is not None and stats.n == 4 and list(stats.seeds) == seeds and stats.rung is None
            expected = [expected_score(row.code or "", s) for s in seeds]
            assert stats.scores == pytest.approx(expected, abs=1e-12)
            mean, se, ci = _closed_form(expected)
            assert (stats.mean, stats.stderr) == pytest.approx((mean, se), abs=1e-12)
            assert stats.ci == pytest.approx(ci, abs=1e-9)
            assert row.score == pytest.approx(mean, abs=1e-12)  # rank_by: mean
            assert [p.score for p in stats.per_seed] == pytest.approx(expected)
            paired = stats.paired
            diffs = [x - b for x, b in zip(expected, (expected_score(dpo.code or "", s) for s in seeds))]
            assert paired is not None and paired.baseline == "dpo" and paired.baseline_id == dpo.id
            assert paired.diffs == pytest.approx(diffs, abs=1e-12)
            if name != "dpo":
                d_mean, _, d_ci = _closed_form(diffs)
                assert paired.mean == pytest.approx(d_mean) and paired.ci == pytest.approx(d_ci, abs=1e-9)
                want = "better" if d_ci[0] > 0 else "worse" if d_ci[1] < 0 else "inconclusive"
                assert paired.verdict == want
        assert rows["strong"].stats.paired.verdict == "better"  # type: ignore[union-attr]
        assert rows["weak"].stats.paired.verdict == "worse"  # type: ignore[union-attr]
        assert rows["even"].stats.paired.verdict == "inconclusive"  # type: ignore[union-attr]
        # Common random numbers: the seed's shared noise cancels in the paired interval, not in the unpaired one.
        strong = rows["strong"].stats
        assert strong.paired.ci[1] - strong.paired.ci[0] < 0.5 * (strong.ci[1] - strong.ci[0])  # type: ignore[union-attr, index]

        # The proposer's history shows the interval and the paired difference, so the LLM can see the noise.
        history = {entry.name: entry for entry in _history(archive, 2, 5, 5)}
        shown = history["strong"].metrics
        assert shown["score_ci_low"] == pytest.approx(strong.ci[0]) and shown["vs_dpo"] == pytest.approx(
            strong.paired.mean
        )  # type: ignore[union-attr, index]
        assert "vs_dpo" not in history["dpo"].metrics


@pytest.mark.usefixtures("isolated_cache")
def test_rank_by_lcb_stores_the_lower_bound_as_the_score(tmp_path: Path) -> None:
    run(_config(tmp_path, rank_by="lcb"), tmp_path / "run")
    with Archive.open(tmp_path / "run") as archive:
        for row in archive.candidates():
            assert row.stats is not None and row.score == pytest.approx(row.stats.ci[0])  # type: ignore[index]
        assert best_first(archive.candidates())[0].name == "strong"


@pytest.mark.usefixtures("isolated_cache", "one_torch_thread")
def test_real_training_on_two_seeds_with_end_of_run_confirmation(tmp_path: Path) -> None:
    """The same wiring with real LoRA DPO trainings (tests.tiny_task) instead of the noise model (kept cheap:
    dpo alone, on two search seeds in generation 0, then on two held-out seeds)."""
    from lossforge.discovery.config import build_config
    from lossforge.discovery.loop import run_discovery
    from lossforge.discovery.seeds import heldout_seeds

    config = build_config(
        {
            "search": {"generations": 0, "seed_candidates": ["dpo"], "confirm": {"top_k": 1, "seeds": 2}},
            "training": {"task": "tests.tiny_task:TinyTask", "seeds": 2, "steps": 2, "eval_samples": 4},
            "seed": 5,
        }
    )
    summary = run_discovery(config, tmp_path / "run", progress=False)
    with Archive.open(tmp_path / "run") as archive:
        dpo = next(row for row in archive.candidates(generation=0) if row.name == "dpo")
        assert dpo.stats is not None and list(dpo.stats.seeds) == [5, 6]
        assert dpo.stats.scores[0] != dpo.stats.scores[1]  # the seed really changes the training
        for row in archive.candidates(status="ok"):
            assert row.stats is not None and row.stats.paired is not None and row.stats.paired.baseline_id == dpo.id
        assert {row["seed"] for row in archive.confirmations()} == set(heldout_seeds(5, 2))
        assert all(row["status"] == "ok" for row in archive.confirmations())
    assert summary.confirmation is not None and summary.confirmation["results"]
    assert summary.confirmation["sentence"].startswith(("no candidate beats dpo", "#"))


@pytest.mark.usefixtures("isolated_cache")
def test_a_run_stored_before_multi_seed_fields_existed_resumes(tmp_path: Path) -> None:
    """An archive whose stored config predates training.seeds, search.baseline/rank_by/confirm/fidelity."""
    config = _config(tmp_path)
    config["training"]["seeds"] = 1
    run(dict(config), tmp_path / "run")
    with Archive.open(tmp_path / "run") as archive:
        stored = archive.get_meta("config")
        for key in ("baseline", "rank_by", "confirm", "fidelity"):
            del stored["search"][key]
        del stored["training"]["seeds"]
        archive.set_meta("config", stored)
    summary = run(dict(config), tmp_path / "run", resume=True)
    assert summary.resumed and summary.counts == {"ok": 5}
