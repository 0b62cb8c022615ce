"""The pipeline on its own, with no training and no sandbox: a scripted executor hands back the ``RunResult`` a
table gives for (code, seed) (or (code, seed, steps)), a fake check gives each code its fingerprint, a scripted
proposer proposes by slot. Dedup, resume from finished seeds, a failing seed, successive halving, repair rounds,
the seed cache and the archive rows they write, in milliseconds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery.candidate_training import CachedResults
from lossforge.discovery.config_groups import FidelityConfig
from lossforge.discovery.pipeline import Pipeline, SeedSpec
from lossforge.discovery.pipeline_settings import PipelineSettings
from lossforge.discovery.proposers.base import Proposal, ProposalRequest, ProposerBase
from lossforge.discovery.seeds import derive_seed
from lossforge.discovery.storage.archive import Archive, CandidateRow
from lossforge.discovery.storage.seed_cache import SeedCache
from lossforge.evaluate.checking.check_report import CheckReport
from lossforge.evaluate.checking.parse import ParsedProposal
from lossforge.evaluate.training.config import TrainConfig
from lossforge.evaluate.training.result import RunResult

SEEDS = (3, 4)
STEPS = 8
Key = tuple[str, int] | tuple[str, int, int]


def _code(name: str, scale: float) -> str:
    return (
        "import torch.nn.functional as F\n\n\n"
        "def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,"
        " beta):\n"
        f"    return -F.logsigmoid({scale!r} * beta * (policy_chosen_logps - policy_rejected_logps))  # {name}\n"
    )


CODE = {name: _code(name, scale) for name, scale in [("dpo", 1.0), ("hinge", 2.0), ("a", 3.0), ("b", 4.0)]}
CODE |= {name: _code(name, scale) for name, scale in [("c", 5.0), ("d", 6.0), ("twin", 7.0)]}
LIBRARY = (SeedSpec("dpo", CODE["dpo"], "the baseline"), SeedSpec("hinge", CODE["hinge"]))


def ok(score: float) -> RunResult:
    return RunResult(status="ok", score=score, metrics={"reward": score}, timings={"training": 1.0})


def _table(scores: Mapping[str, tuple[float, float]]) -> dict[Key, RunResult]:
    """Each named candidate's results on the two seeds."""
    return {(CODE[name], seed): ok(s) for name, pair in scores.items() for seed, s in zip(SEEDS, pair, strict=True)}


class ScriptedExecutor:
    """An ``Executor`` that trains nothing: each ``submit(train, code, config)`` is a completed future holding the
    table's result for ``(code, seed, steps)``, else ``(code, seed)``; ``calls`` lists what was asked for."""

    name = "scripted"
    workers = 1

    def __init__(self, table: Mapping[Key, RunResult]) -> None:
        self.table = dict(table)
        self.calls: list[tuple[str, int, int | None]] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        code, config = args
        with self._lock:
            self.calls.append((code, config.seed, config.steps))
        future: Future[Any] = Future()
        future.set_result(self.table.get((code, config.seed, config.steps)) or self.table[(code, config.seed)])
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass

    def trained(self, name: str) -> list[tuple[int, int | None]]:
        return sorted((seed, steps) for code, seed, steps in self.calls if code == CODE[name])


class ScriptedProposer(ProposerBase):
    """Proposes ``plan[(generation, index, repair round)]`` = (name, code); keeps every request it was sent."""

    name = "scripted"

    def __init__(self, plan: Mapping[tuple[int, int, int], tuple[str, str]]) -> None:
        self.plan = dict(plan)
        self.requests: list[ProposalRequest] = []

    def propose(self, request: ProposalRequest) -> Proposal:
        self.requests.append(request)
        name, code = self.plan[(request.generation, request.index, request.repair_round)]
        return Proposal(code=code, name=name, thought=f"try {name}", proposer="scripted", extra={"origin": "test"})


def _check(twins: Mapping[str, str] | None = None) -> Callable[[ParsedProposal], CheckReport]:
    """Passes every code with its name as fingerprint (``twins`` maps a name to another's), but rejects code that
    imports ``os``."""
    names = {code: name for name, code in CODE.items()}

    def check(parsed: ParsedProposal) -> CheckReport:
        if "import os" in parsed.code:
            return CheckReport(passed=False, stage="static", errors=["`os` is not allowed"], seconds=0.01)
        name = names[parsed.code]
        fingerprint = (twins or {}).get(name, name)
        return CheckReport(passed=True, stage="ok", fingerprint=fingerprint, profile={}, seconds=0.01)

    return check


def _never_trains(code: str, config: TrainConfig) -> RunResult:
    raise AssertionError("the scripted executor never calls the train function")


def _pipeline(
    archive: Archive,
    executor: ScriptedExecutor,
    *,
    check: Callable[[ParsedProposal], CheckReport] | None = None,
    fidelity: FidelityConfig | None = None,
    cached: CachedResults | None = None,
) -> Pipeline:
    settings = PipelineSettings(
        task="sentiment",
        train_config=TrainConfig(task="sentiment", steps=STEPS),
        run_seed=SEEDS[0],
        seeds=SEEDS,
        repair_rounds=1,
        threads=2,
        baseline="dpo",
        fidelity=fidelity,
    )
    return Pipeline(settings, archive, executor, check=check or _check(), train=_never_trains, seed_cache=cached)


def _rows(archive: Archive) -> dict[str, CandidateRow]:
    return {row.proposal_key: row for row in archive.candidates()}


LIBRARY_SCORES = {"dpo": (0.5, 0.7), "hinge": (0.4, 0.6)}


def test_seeds_and_a_generation_write_their_rows_with_the_scripted_scores(tmp_path: Path) -> None:
    executor = ScriptedExecutor(_table({**LIBRARY_SCORES, "a": (0.8, 0.9), "b": (0.1, 0.2)}))
    proposer = ScriptedProposer({(1, 0, 0): ("a", CODE["a"]), (1, 1, 0): ("b", CODE["b"])})
    with Archive.open(tmp_path) as archive:
        pipeline = _pipeline(archive, executor)
        library = pipeline.run_seeds(LIBRARY)
        last = pipeline.run_generation(proposer, 1, 2, history=(), lessons="short losses did well")
        rows = _rows(archive)
        assert [row.proposal_key for row in library] == ["g0-i0-r0", "g0-i1-r0"]
        assert [row.proposal_key for row in last] == ["g1-i0-r0", "g1-i1-r0"]
        dpo, a = rows["g0-i0-r0"], rows["g1-i0-r0"]
        assert (dpo.status, dpo.stage, dpo.proposer, dpo.origin, dpo.thought) == (
            "ok",
            "done",
            "library",
            "library",
            "the baseline",
        )
        assert dpo.score == pytest.approx(0.6) and dpo.stats is not None and dpo.stats.seeds == SEEDS
        assert (a.status, a.name, a.proposer, a.origin, a.fingerprint) == ("ok", "a", "scripted", "test", "a")
        assert a.score == pytest.approx(0.85) and a.metrics == {"reward": pytest.approx(0.85)}
        assert a.stats is not None and a.stats.paired is not None and a.stats.paired.baseline == "dpo"
        assert a.stats.paired.mean == pytest.approx(0.25)  # seed by seed: 0.8 - 0.5, 0.9 - 0.7
        assert set(archive.seed_runs(a.id, STEPS)) == set(SEEDS)  # each finished seed archived
        assert a.seed == derive_seed(SEEDS[0], 1, 0, 0) and "check_s" in a.timings and "train_start" in a.timings
    # The generation's requests (sent concurrently) carry the lessons and the slot's seed.
    requests = sorted(proposer.requests, key=lambda request: request.index)
    assert [(r.index, r.lessons, r.seed) for r in requests] == [
        (i, "short losses did well", derive_seed(SEEDS[0], 1, i, 0)) for i in (0, 1)
    ]
    assert all(executor.trained(name) == [(3, STEPS), (4, STEPS)] for name in ("dpo", "hinge", "a", "b"))


def test_a_repeated_fingerprint_is_a_duplicate_and_never_trained(tmp_path: Path) -> None:
    executor = ScriptedExecutor(_table({**LIBRARY_SCORES, "a": (0.8, 0.9)}))
    proposer = ScriptedProposer({(1, 0, 0): ("a", CODE["a"]), (1, 1, 0): ("twin", CODE["twin"])})
    with Archive.open(tmp_path) as archive:
        pipeline = _pipeline(archive, executor, check=_check({"twin": "a"}))
        pipeline.run_seeds(LIBRARY)
        pipeline.run_generation(proposer, 1, 2, history=())
        rows = _rows(archive)
        a, twin = rows["g1-i0-r0"], rows["g1-i1-r0"]
        assert (twin.status, twin.stage, twin.fingerprint, twin.score) == ("duplicate", "dedup", "a", None)
        assert twin.reason == f"same function as #{a.id} (a), by behavioural fingerprint"
        assert "g1-i1-r1" not in rows  # a duplicate is final: no repair round
    assert executor.trained("twin") == []


def test_a_candidate_resumes_from_the_seeds_it_had_finished(tmp_path: Path) -> None:
    executor = ScriptedExecutor(_table({**LIBRARY_SCORES, "a": (0.8, 0.9)}))
    with Archive.open(tmp_path) as archive:
        pipeline = _pipeline(archive, executor)
        pipeline.run_seeds(LIBRARY)
        # A killed run's row: proposed, admitted, its first seed finished (with a result the table does not give).
        cid = archive.add_candidate(generation=1, idx=0, status="pending", stage="training", name="a", code=CODE["a"])
        archive.record_seed_run(cid, STEPS, SEEDS[0], ok(0.75).to_dict(), 1.0, 2.0)
        proposer = ScriptedProposer({})  # asked for nothing: the slot's row is in the archive
        (row,) = pipeline.run_generation(proposer, 1, 1, history=())
        assert row.id == cid and row.status == "ok" and row.stats is not None
        assert row.stats.scores == pytest.approx((0.75, 0.9)) and row.score == pytest.approx(0.825)
    assert proposer.requests == []
    assert executor.trained("a") == [(4, STEPS)]  # the finished seed was not trained again


def test_one_failed_seed_fails_the_row(tmp_path: Path) -> None:
    table = _table({**LIBRARY_SCORES, "a": (0.8, 0.9), "b": (0.3, 0.3)})
    table[(CODE["a"], SEEDS[1])] = RunResult(status="diverged", error="loss became nan at step 5")
    executor = ScriptedExecutor(table)
    proposer = ScriptedProposer({(1, 0, 0): ("a", CODE["a"]), (1, 1, 0): ("b", CODE["b"])})
    with Archive.open(tmp_path) as archive:
        pipeline = _pipeline(archive, executor)
        pipeline.run_seeds(LIBRARY)
        pipeline.run_generation(proposer, 1, 2, history=())
        rows = _rows(archive)
        a, b = rows["g1-i0-r0"], rows["g1-i1-r0"]
        assert (a.status, a.stage, a.score, a.stats) == ("diverged", "done", None, None)
        assert a.reason == f"seed {SEEDS[1]}: loss became nan at step 5"
        assert set(archive.seed_runs(a.id, STEPS)) == set(SEEDS)  # a divergence is reproducible: kept for a resume
        assert b.status == "ok" and b.score == pytest.approx(0.3)  # the other candidate is unaffected


def test_successive_halving_promotes_the_best_share_and_demotes_the_rest(tmp_path: Path) -> None:
    low = {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.2}  # rung 0: half the steps, on the first seed
    table = _table({**LIBRARY_SCORES, "a": (0.9, 0.9), "b": (0.6, 0.8), "c": (0.5, 0.7), "d": (0.9, 0.9)})
    table |= {(CODE[name], SEEDS[0], STEPS // 2): ok(score) for name, score in low.items()}
    executor = ScriptedExecutor(table)
    proposer = ScriptedProposer({(1, i, 0): (name, CODE[name]) for i, name in enumerate(low)})
    with Archive.open(tmp_path) as archive:
        pipeline = _pipeline(archive, executor, fidelity=FidelityConfig(steps_fractions=(0.5, 1.0), keep=0.5))
        pipeline.run_seeds(LIBRARY)
        pipeline.run_generation(proposer, 1, 4, history=())
        rows = {row.name: row for row in archive.candidates(generation=1)}
        stats = {name: row.stats for name, row in rows.items()}
        for name, row_stats in stats.items():
            assert row_stats is not None and row_stats.rungs is not None
            assert (row_stats.rungs[0].steps, row_stats.rungs[0].seeds) == (STEPS // 2, (SEEDS[0],))
            assert row_stats.rungs[0].mean == pytest.approx(low[name])
        for name, full in (("b", 0.7), ("c", 0.6)):  # promoted: the full budget on every seed, paired to dpo
            promoted = stats[name]
            assert promoted is not None and promoted.rung == 1 and rows[name].score == pytest.approx(full)
            assert promoted.paired is not None and promoted.paired.baseline == "dpo"
        for name in ("a", "d"):  # not promoted: rung results kept, no score
            assert rows[name].status == "ok" and rows[name].score is None
            assert "not promoted past rung 0" in (rows[name].reason or "")
    for name in ("a", "d"):
        assert executor.trained(name) == [(SEEDS[0], STEPS // 2)]
    for name in ("b", "c"):
        assert executor.trained(name) == [(SEEDS[0], STEPS // 2), (SEEDS[0], STEPS), (SEEDS[1], STEPS)]


def test_a_rejected_proposal_is_repaired_with_the_checkers_errors(tmp_path: Path) -> None:
    leaky = "import os\n" + CODE["a"]
    executor = ScriptedExecutor(_table({**LIBRARY_SCORES, "a": (0.8, 0.9)}))
    proposer = ScriptedProposer({(1, 0, 0): ("a", leaky), (1, 0, 1): ("a", CODE["a"])})
    with Archive.open(tmp_path) as archive:
        pipeline = _pipeline(archive, executor)
        pipeline.run_seeds(LIBRARY)
        (last,) = pipeline.run_generation(proposer, 1, 1, history=())
        rejected = _rows(archive)["g1-i0-r0"]
        assert (rejected.status, rejected.stage, rejected.reason) == ("rejected", "static", "`os` is not allowed")
        assert last.proposal_key == "g1-i0-r1" and last.status == "ok"
    repair = proposer.requests[-1]
    assert repair.repair_round == 1 and repair.repair_errors == ("`os` is not allowed",)
    assert repair.repair_of is not None and repair.repair_of.code == leaky


def test_library_seeds_reuse_the_seed_cache_across_runs(tmp_path: Path) -> None:
    cache = CachedResults(SeedCache(tmp_path / "cache"), "sentiment", 0.1, {"budget": "test"})
    first = ScriptedExecutor(_table(LIBRARY_SCORES))
    with Archive.open(tmp_path / "first") as archive:
        scores = [row.score for row in _pipeline(archive, first, cached=cache).run_seeds(LIBRARY)]
    second = ScriptedExecutor({})  # any training would fail the lookup
    with Archive.open(tmp_path / "second") as archive:
        rows = _pipeline(archive, second, cached=cache).run_seeds(LIBRARY)
        assert [row.score for row in rows] == scores and all(row.timings["cached"] for row in rows)
    assert len(first.calls) == 4 and second.calls == []
