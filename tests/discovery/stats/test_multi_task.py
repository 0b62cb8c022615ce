"""The multi-task fitness against closed-form values: unit checks of the normalization and aggregation, and a real
loop (real checks, archive, executor) on two tasks of the known noise model of ``tests.noisy_scores`` on different
scales, where every stored normalized score, aggregate, per-task paired difference and the run's ranking equal
their values computed here from the noise model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.seeds import heldout_seeds
from lossforge.discovery.stats import statistics
from lossforge.discovery.stats.multi_task import TaskScale, aggregate_tasks, combine
from lossforge.discovery.stats.seed_stats import SeedRun, SeedStats
from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.training.result import RunResult

from tests.noisy_scores import HELDOUT_TASK, SCALED_TASK, TASK, expected_score, run

SEEDS = [11, 12, 13, 14]
PLAN = {1: [("strong", 0.2, 0.1), ("weak", -0.2, 0.2)]}


def _runs(scores: dict[int, float], **metrics: float) -> list[SeedRun]:
    return [SeedRun(seed, RunResult(status="ok", score=score, metrics=dict(metrics))) for seed, score in scores.items()]


def test_a_task_scale_puts_the_reference_at_0_and_the_baseline_at_1() -> None:
    scale = TaskScale.of("t", [0.1, 0.3], [0.6, 0.8])  # reference mean 0.2, baseline mean 0.7
    assert scale.normalize(0.2) == pytest.approx(0.0)
    assert scale.normalize(0.7) == pytest.approx(1.0)
    assert scale.normalize(0.45) == pytest.approx(0.5)
    below = TaskScale("t", reference=0.5, baseline=0.3)  # the baseline fell below the reference
    assert below.normalize(0.3) == pytest.approx(-1.0) and below.normalize(0.7) == pytest.approx(1.0)
    flat = TaskScale("t", reference=0.5, baseline=0.5)
    assert flat.normalize(0.75) == pytest.approx(0.25)  # no gain to divide by: the raw difference


def test_mean_and_min_combine_seed_by_seed_on_common_seeds() -> None:
    normalized = {"a": {0: 1.0, 1: 1.4, 2: 9.0}, "b": {0: 0.0, 1: 2.0}}
    assert combine(normalized, "mean") == {0: 0.5, 1: 1.7}
    assert combine(normalized, "min") == {0: 0.0, 1: 1.4}


def test_aggregate_tasks_closed_form_with_metrics_and_a_failure() -> None:
    runs = {"a": _runs({0: 0.5, 1: 0.7}, kl=1.0), "b": _runs({0: 10.0, 1: 30.0}, kl=3.0)}
    scales = {"a": TaskScale("a", 0.0, 0.5), "b": TaskScale("b", 10.0, 20.0)}
    outcome = aggregate_tasks(runs, scales)
    assert outcome.status == "ok"
    assert outcome.stats is not None and outcome.stats.scores == pytest.approx((0.5, 1.7))
    assert outcome.score == pytest.approx(1.1)
    assert outcome.metrics == pytest.approx({"a": 1.2, "a.kl": 1.0, "b": 1.0, "b.kl": 3.0})
    worst = aggregate_tasks(runs, scales, how="min", rank_by="lcb")
    assert worst.stats is not None and worst.stats.scores == pytest.approx((0.0, 1.4))
    assert worst.score == pytest.approx(statistics.confidence_interval([0.0, 1.4])[0])  # type: ignore[index]
    stored = SeedStats.from_json(outcome.stats.to_json())
    assert stored == outcome.stats and [t.task for t in stored.tasks or ()] == ["a", "b"]
    runs["b"][1] = SeedRun(1, RunResult(status="failed", error="diverged"))
    failed = aggregate_tasks(runs, scales)
    assert failed.status == "failed" and failed.score is None and failed.stats is None
    assert failed.reason == "task b: seed 1: diverged"


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))


def _config(tmp_path: Path, **search: Any) -> dict[str, Any]:
    return {
        "plan": PLAN,
        "search": {
            "generations": 1,
            "population": 2,
            "seed_candidates": ["dpo", "hinge", "ipo"],
            "confirm": {"top_k": 0},
            **search,
        },
        "training": {"tasks": [TASK, SCALED_TASK], "seeds": 4, "steps": 8},
        "seed": 11,
        "out": str(tmp_path / "run"),
    }


def _scale(task: str, dpo_code: str) -> TaskScale:
    reference = [expected_score(dpo_code, seed, 0, task) for seed in SEEDS]
    trained = [expected_score(dpo_code, seed, 8, task) for seed in SEEDS]
    return TaskScale.of(task, reference, trained)


@pytest.mark.usefixtures("isolated_cache")
@pytest.mark.parametrize("how", ["mean", "min"])
def test_a_two_task_run_stores_the_closed_form_fitness(tmp_path: Path, how: str) -> None:
    summary = run(_config(tmp_path, aggregate=how), tmp_path / "run")
    assert summary.counts == {"ok": 5}
    with Archive.open(tmp_path / "run") as archive:
        rows = {row.name: row for row in archive.candidates()}
        scales = {task: _scale(task, rows["dpo"].code or "") for task in (TASK, SCALED_TASK)}
        dpo_raw = {task: [expected_score(rows["dpo"].code or "", s, 8, task) for s in SEEDS] for task in scales}
        dpo_combined = None
        for name in ["dpo", "hinge", "ipo", "strong", "weak"]:
            row, code = rows[name], rows[name].code or ""
            stats = row.stats
            assert stats is not None and stats.tasks is not None and list(stats.seeds) == SEEDS
            normalized = {}
            for entry in stats.tasks:
                raw = [expected_score(code, s, 8, entry.task) for s in SEEDS]
                assert entry.scores == pytest.approx(raw, abs=1e-12)
                normalized[entry.task] = [scales[entry.task].normalize(x) for x in raw]
                assert entry.normalized == pytest.approx(normalized[entry.task], abs=1e-12)
                assert row.metrics[entry.task] == pytest.approx(statistics.mean(normalized[entry.task]))
                if name != "dpo":  # per-task paired raw differences to dpo
                    assert entry.paired is not None and entry.paired.baseline == "dpo"
                    diffs = [x - y for x, y in zip(raw, dpo_raw[entry.task])]
                    assert entry.paired.diffs == pytest.approx(diffs, abs=1e-12)
            pick = min if how == "min" else statistics.mean
            combined = [pick([normalized[t][i] for t in (TASK, SCALED_TASK)]) for i in range(len(SEEDS))]
            assert stats.scores == pytest.approx(combined, abs=1e-12)
            assert row.score == pytest.approx(statistics.mean(combined), abs=1e-12)
            if name == "dpo":
                dpo_combined = combined
                assert stats.paired is None or stats.paired.diffs == pytest.approx([0.0] * 4)
                if how == "mean":  # the baseline's normalized mean is 1 on every task by construction
                    assert row.score == pytest.approx(1.0, abs=1e-12)
            else:
                assert dpo_combined is not None and stats.paired is not None
                expected = [x - y for x, y in zip(combined, dpo_combined)]
                assert stats.paired.diffs == pytest.approx(expected, abs=1e-12)
        # the untrained reference was trained (0 steps) on every task and seed, for the baseline only
        for task in (TASK, SCALED_TASK):
            assert sorted(archive.seed_runs(rows["dpo"].id, 0, task)) == SEEDS
            assert archive.seed_runs(rows["hinge"].id, 0, task) == {}
    assert rows["strong"].score > rows["dpo"].score > rows["weak"].score  # type: ignore[operator]


@pytest.mark.usefixtures("isolated_cache")
def test_a_multi_task_run_resumes_without_training_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = run(_config(tmp_path), tmp_path / "run")
    log = tmp_path / "trainings.log"
    monkeypatch.setenv("NOISY_LOG", str(log))
    again = run(_config(tmp_path), tmp_path / "run", resume=True)
    assert not log.exists() or log.read_text() == ""
    assert again.counts == first.counts


@pytest.mark.usefixtures("isolated_cache")
def test_confirmation_on_search_and_heldout_tasks_closed_form(tmp_path: Path) -> None:
    config = _config(tmp_path, confirm={"top_k": 1, "seeds": 4, "tasks": [HELDOUT_TASK]})
    config["plan"] = {1: [("strong", 0.2, 0.1), ("weak", -0.2, 0.2)]}
    summary = run(config, tmp_path / "run")
    report = summary.confirmation
    assert report is not None
    held = list(heldout_seeds(11, 4))
    assert report["tasks"] == [TASK, SCALED_TASK, HELDOUT_TASK] and report["seeds"] == held
    with Archive.open(tmp_path / "run") as archive:
        codes = {row.name: row.code or "" for row in archive.candidates()}
        reference_rows = [row for row in archive.confirmations() if row["candidate_id"] is None]
    assert len(reference_rows) == 3 * 4  # the untrained reference on every task and held-out seed

    def normalized(name: str, tasks: list[str]) -> list[float]:
        per_task = []
        for task in tasks:
            scale = TaskScale.of(
                task,
                [expected_score(codes["dpo"], s, 0, task) for s in held],
                [expected_score(codes["dpo"], s, 8, task) for s in held],
            )
            per_task.append([scale.normalize(expected_score(codes[name], s, 8, task)) for s in held])
        return [statistics.mean(values) for values in zip(*per_task)]

    groups = {(e["group"], e["name"]): e for e in report["groups"]}
    for group, tasks in (("search", [TASK, SCALED_TASK]), ("heldout", [HELDOUT_TASK])):
        strong, dpo = normalized("strong", tasks), normalized("dpo", tasks)
        entry = groups[(group, "strong")]
        assert entry["tasks"] == tasks and entry["scores"] == pytest.approx(strong, abs=1e-12)
        assert entry["paired"]["diffs"] == pytest.approx([x - y for x, y in zip(strong, dpo)], abs=1e-12)
        assert groups[(group, "dpo")]["mean"] == pytest.approx(1.0, abs=1e-12)
    sentence = report["sentence"]
    assert sentence.startswith(f"#{groups[('search', 'strong')]['candidate_id']} strong beats dpo on the search")
    assert "on the search tasks" in sentence and "on the held-out tasks" in sentence
    assert summary.to_dict()["confirmed"] == sentence


@pytest.mark.usefixtures("isolated_cache")
def test_halving_trains_rung_0_on_the_first_task_and_the_last_rung_on_every_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "trainings.log"
    monkeypatch.setenv("NOISY_LOG", str(log))
    run(_config(tmp_path, fidelity={"steps_fractions": [0.25, 1.0], "keep": 0.5}), tmp_path / "run")
    with Archive.open(tmp_path / "run") as archive:
        rows = {row.name: row for row in archive.candidates()}
    lines = [line.split() for line in log.read_text().splitlines()]
    named = {name: (row.code or "") for name, row in rows.items()}

    def trainings(name: str) -> list[tuple[str, int, str]]:
        digest = hashlib.sha256(named[name].encode()).hexdigest()[:12]
        return sorted((task, int(seed), steps) for code, task, _, seed, steps in lines if code == digest)

    assert trainings("weak") == [(TASK, 11, "2")]  # rung 0: a quarter of the steps, one seed, one task
    strong = trainings("strong")
    assert (TASK, 11, "2") in strong
    assert sorted(t for t in strong if t[2] == "8") == sorted((t, s, "8") for t in (TASK, SCALED_TASK) for s in SEEDS)
    stats = rows["strong"].stats
    assert stats is not None and stats.tasks is not None and [r.rung for r in stats.rungs or ()] == [0, 1]
    assert rows["strong"].score is not None and rows["weak"].score is None
    assert "not promoted past rung 0" in (rows["weak"].reason or "")


def test_progress_counts_every_task_and_names_the_reference() -> None:
    from lossforge.discovery.config import load_config
    from lossforge.discovery.progress import Cost, confirm_line

    cost = Cost.of(load_config(overrides={"training.suite": "default", "training.seeds": 2}))
    # 4 library losses + 12 proposals, each on 2 seeds x 3 tasks, and dpo untrained on 2 seeds x 3 tasks;
    # top 3 + dpo + best library + the reference on 5 held-out seeds x 6 tasks.
    assert (cost.search, cost.confirmation, cost.tasks) == (16 * 6 + 6, 6 * 5 * 6, 3)
    assert "each candidate on 2 seeds of each of 3 tasks" in cost.sentence()
    line = confirm_line(
        {"done": 1, "total": 2, "candidate_id": None, "name": "reference", "seed": 7, "status": "ok", "score": 0.5}
    )
    assert line == "confirm 1/2: the untrained reference seed 7: ok 0.5"
