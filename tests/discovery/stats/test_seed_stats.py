"""The typed multi-seed statistics: their JSON is the archive's (an older archive's rows load, a new row's JSON is
what the untyped dicts gave), the aggregation over seeds and over betas shares one implementation
(``evaluate.training.combine``), and one ``is_ranked`` decides what takes part in rankings."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from lossforge.discovery.scoring.stats_views import brief_stats, with_interval
from lossforge.discovery.stats import statistics
from lossforge.discovery.stats.seed_stats import Baseline, PairedStats, SeedRun, SeedStats, aggregate
from lossforge.evaluate.statuses import is_ranked
from lossforge.evaluate.training.launcher import _combine
from lossforge.evaluate.training.result import RunResult

STORED = {  # a multi-seed row of a run with successive halving, in the order the pipeline builds it
    "n": 3,
    "seeds": [7, 8, 9],
    "scores": [0.25, 0.5, 0.75],
    "mean": 0.5,
    "stderr": 0.14433756729740643,
    "ci": [-0.12103360762659438, 1.1210336076265944],
    "paired": {
        "baseline": "dpo",
        "baseline_id": 1,
        "diffs": [0.05, 0.1, 0.15],
        "mean": 0.1,
        "ci": [-0.024, 0.224],
        "verdict": "inconclusive",
    },
    "rung": 1,
    "per_seed": [
        {"seed": 7, "score": 0.25, "metrics": {"reward": 0.25, "kl": 1}},
        {"seed": 8, "score": 0.5, "metrics": {"reward": 0.5, "kl": 2}},
        {"seed": 9, "score": 0.75, "metrics": {"reward": 0.75, "kl": 3}},
    ],
    "rungs": [
        {"rung": 0, "steps": 2, "status": "ok", "seeds": [7], "scores": [0.2], "mean": 0.2},
        {"rung": 1, "steps": 8, "status": "ok", "seeds": [7, 8, 9], "scores": [0.25, 0.5, 0.75], "mean": 0.5},
    ],
}


def test_stored_json_round_trips_byte_for_byte() -> None:
    stats = SeedStats.from_json(json.loads(json.dumps(STORED)))
    assert stats.to_json() == STORED and json.dumps(stats.to_json()) == json.dumps(STORED)  # keys in build order
    assert json.dumps(stats.to_json(), sort_keys=True) == json.dumps(STORED, sort_keys=True)  # the archive's text
    assert json.dumps(stats.to_json(sort_keys=True)) == json.dumps(json.loads(json.dumps(STORED, sort_keys=True)))
    assert stats.paired is not None and stats.paired.verdict == "inconclusive" and stats.rungs is not None
    assert [r.mean for r in stats.rungs] == [0.2, 0.5] and stats.per_seed[2].metrics == {"reward": 0.75, "kl": 3}
    without = {key: value for key, value in STORED.items() if key != "rungs"}  # no halving: no ``rungs`` key
    assert SeedStats.from_json(without).to_json() == without


def test_missing_keys_read_as_the_untyped_readers_took_them() -> None:
    old = SeedStats.from_json({"n": 2, "seeds": [1, 2], "scores": [0.1, 0.3], "mean": 0.2, "stderr": 0.1})
    assert (old.ci, old.paired, old.rung, old.per_seed, old.rungs) == (None, None, None, (), None)
    partial = SeedStats.from_json({"paired": {"baseline": "dpo", "mean": 0.03, "ci": [0.01, 0.05]}})
    assert partial.n == 0 and partial.mean is None and partial.paired is not None
    assert partial.paired.diffs == () and partial.paired.verdict is None and partial.paired.baseline_id is None
    assert SeedStats.from_json({"paired": {}}).paired is None  # an empty comparison is no comparison


def test_aggregate_builds_the_stored_statistics() -> None:
    runs = [
        SeedRun(seed, RunResult("ok", score=x, metrics={"reward": x, "note": "text"}, timings={"training": 1.0}), 0, 1)
        for seed, x in ((7, 0.25), (8, 0.5), (9, 0.75))
    ]
    baseline = Baseline("dpo", 1, (7, 8, 9), (0.2, 0.4, 0.6))
    outcome = aggregate(runs, rank_by="lcb", baseline=baseline, rung=None)
    ci = statistics.confidence_interval([0.25, 0.5, 0.75])
    diffs = [0.25 - 0.2, 0.5 - 0.4, 0.75 - 0.6]
    assert outcome.stats is not None and outcome.stats.to_json() == {
        "n": 3,
        "seeds": [7, 8, 9],
        "scores": [0.25, 0.5, 0.75],
        "mean": 0.5,
        "stderr": statistics.stderr([0.25, 0.5, 0.75]),
        "ci": ci,
        "paired": {
            "baseline": "dpo",
            "baseline_id": 1,
            "diffs": diffs,
            "mean": statistics.mean(diffs),
            "ci": statistics.confidence_interval(diffs),
            "verdict": statistics.verdict(statistics.confidence_interval(diffs)),
        },
        "rung": None,
        "per_seed": [{"seed": s, "score": x, "metrics": {"reward": x}} for s, x in ((7, 0.25), (8, 0.5), (9, 0.75))],
    }
    assert outcome.score == ci[0] and outcome.metrics == {"reward": 0.5}  # type: ignore[index]
    assert outcome.timings == {"train_start": 0, "train_end": 1, "training": 3.0}
    assert outcome.stats.with_paired(None).paired is None and outcome.stats.with_paired(baseline) == outcome.stats
    assert Baseline.from_stats("dpo", 1, outcome.stats) == Baseline("dpo", 1, (7, 8, 9), (0.25, 0.5, 0.75))


def test_aggregate_takes_the_first_failing_seed() -> None:
    runs = [
        SeedRun(1, RunResult("ok", score=0.5, timings={"total": 2.0})),
        SeedRun(2, RunResult("diverged", error="nan loss", metrics={"train/loss": math.inf}, timings={"total": 1.0})),
    ]
    outcome = aggregate(runs)
    assert (outcome.status, outcome.score, outcome.reason, outcome.stats) == (
        "diverged",
        None,
        "seed 2: nan loss",
        None,
    )
    assert outcome.metrics == {"train/loss": math.inf} and outcome.timings == {"cached": True, "total": 3.0}


def test_betas_and_seeds_share_the_aggregation() -> None:
    runs = [
        RunResult("ok", score=0.1, metrics={"reward": 0.1, "kl": 1.0}, timings={"training": 1.0, "total": 2.0}),
        RunResult("ok", score=0.3, metrics={"reward": 0.3}, timings={"training": 2.0, "total": 3.0}),
    ]
    combined = _combine((0.1, 0.5), runs)
    assert combined.status == "ok" and combined.score == pytest.approx(0.2) and combined.min_score == 0.1
    assert combined.metrics == {"reward": 0.2} and combined.timings == {"training": 3.0, "total": 5.0}
    seeds = aggregate([SeedRun(i, run) for i, run in enumerate(runs)])
    assert seeds.metrics == combined.metrics and {k: seeds.timings[k] for k in combined.timings} == combined.timings
    failed = _combine((0.1, 0.5), [runs[0], RunResult("failed", error="boom", timings={"total": 1.0})])
    assert failed.status == "failed" and failed.timings == {"training": 1.0, "total": 3.0}
    assert failed.per_beta is not None and failed.per_beta["0.5"]["status"] == "failed"


def test_views_of_the_statistics() -> None:
    stats = SeedStats.from_json(STORED)
    brief = brief_stats(stats)
    assert brief is not None and "per_seed" not in brief and list(brief) == sorted(brief)
    row = SimpleNamespace(
        id=5, name="x", status="ok", code="", score=0.5, profile=None, reason=None, thought=None, generation=1
    )
    shown = with_interval(SimpleNamespace(**vars(row), metrics={"reward": 0.5}, stats=stats))["metrics"]
    assert shown["score_ci_low"] == STORED["ci"][0] and shown["vs_dpo"] == 0.1 and shown["rung0_score"] == 0.2  # type: ignore[index]
    assert "rung1_score" not in shown  # the last rung is the score itself
    assert with_interval(SimpleNamespace(**vars(row), metrics={}, stats=None))["metrics"] == {}


@pytest.mark.parametrize(
    ("status", "score", "ranked"),
    [("ok", 0.5, True), ("ok", None, False), ("ok", math.nan, False), ("ok", -math.inf, False), ("failed", 0.5, False)],
)
def test_is_ranked(status: str, score: float | None, ranked: bool) -> None:
    assert is_ranked(SimpleNamespace(status=status, score=score)) is ranked


def test_paired_between_shares_only_common_seeds() -> None:
    pair = PairedStats.between([1, 2, 3], [1.0, 2.0, 3.0], [2, 3, 4], [1.5, 2.5, 9.0], baseline="b", baseline_id=4)
    assert pair is not None and pair.diffs == (0.5, 0.5) and pair.ci == (0.5, 0.5) and pair.verdict == "better"
    assert pair.to_json() == {
        "baseline": "b",
        "baseline_id": 4,
        "diffs": [0.5, 0.5],
        "mean": 0.5,
        "ci": [0.5, 0.5],
        "verdict": "better",
    }
