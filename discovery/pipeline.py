"""One proposal slot, start to finish: propose -> parse -> static policy -> sandbox -> fingerprint dedup ->
training + fitness -> archive, with up to R repair rounds fed by the checker's errors.

A slot is (generation, index); each attempt is one archive row keyed ``g{gen}-i{idx}-r{round}``. The row is
written as ``pending`` as soon as the proposal exists (the LLM's reply is paid for and must never be asked
for twice), then updated with the check's outcome and, for a candidate that passes, with the training
result. That makes every slot resumable from the archive alone:

- a finished row (any status but ``pending``) is never redone; a ``rejected`` one feeds the next repair round
  from its stored reply and errors, exactly as it did in the first run;
- a ``pending`` row (a killed run) is re-checked and re-trained from its stored code, without a new request;
- a missing row is proposed afresh with the slot's seed, so it matches what an uninterrupted run proposed.

Nothing here raises into the loop for a bad candidate: every outcome becomes a row. Only ``BudgetExceeded``
(stop proposing, finish cleanly) and configuration errors of the proposer (abort) leave a slot early.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lossforge.discovery.archive import Archive, CandidateRow, SeedCache, proposal_key
from lossforge.discovery.executors import Executor
from lossforge.discovery.progress import Progress
from lossforge.discovery.proposals import HistoryEntry, Proposal, Proposer, ProposalRequest
from lossforge.evaluate.llm import BudgetExceeded
from lossforge.evaluate.report import CheckReport
from lossforge.evaluate.results import RunResult
from lossforge.evaluate.tasks.base import TaskError

CheckFn = Callable[[str], CheckReport]
TrainFn = Callable[[str, Any], RunResult]


def derive_seed(run_seed: int, generation: int, index: int, repair_round: int = 0) -> int:
    """The seed of one attempt, a pure function of its coordinates (so a resumed run proposes the same)."""
    digest = hashlib.sha256(f"lossforge:{run_seed}:{generation}:{index}:{repair_round}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class StopSignal:
    """Set once when the run must stop proposing (budget spent); in-flight training still finishes."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class SlotResult:
    generation: int
    index: int
    candidate_id: int | None  # the slot's last row; None when no proposal was made (budget)
    status: str | None
    score: float | None = None
    rounds: int = 0


@dataclass(frozen=True)
class SeedSpec:
    """A library candidate evaluated in generation 0."""

    name: str
    code: str
    description: str = ""
    origin: str = ""


class Pipeline:
    """Runs slots against one archive. Thread-safe: a generation's slots run concurrently."""

    def __init__(
        self,
        archive: Archive,
        executor: Executor,
        *,
        check: CheckFn,
        train: TrainFn,
        train_config: Any,
        task: str,
        repair_rounds: int,
        run_seed: int,
        progress: Progress | None = None,
        stop: StopSignal | None = None,
        seed_cache: SeedCache | None = None,
        seed_cache_budget: Mapping[str, Any] | None = None,
        beta: float = 0.1,
    ) -> None:
        self.archive = archive
        self.executor = executor
        self.check = check
        self.train = train
        self.train_config = train_config
        self.task = task
        self.repair_rounds = repair_rounds
        self.run_seed = run_seed
        self.progress = progress or Progress()
        self.stop = stop or StopSignal()
        self.seed_cache = seed_cache
        self.seed_cache_budget = dict(seed_cache_budget or {})
        self.beta = beta
        # Held from the fingerprint lookup until this row carries its fingerprint, so two concurrent slots
        # with the same function cannot both be trained.
        self._dedup_lock = threading.Lock()

    # -- proposals (generations >= 1) ------------------------------------------------------------------

    def run_slot(
        self, proposer: Proposer, generation: int, index: int, history: tuple[HistoryEntry, ...]
    ) -> SlotResult:
        repair_of: Proposal | None = None
        errors: tuple[str, ...] = ()
        row: CandidateRow | None = None
        for repair_round in range(self.repair_rounds + 1):
            row = self.archive.by_key(proposal_key(generation, index, repair_round))
            if row is None:
                if self.stop.is_set():
                    break
                seed = derive_seed(self.run_seed, generation, index, repair_round)
                request = ProposalRequest(
                    generation=generation, index=index, seed=seed,
                    history=history, task=self.task, repair_of=repair_of, repair_errors=errors,
                    repair_round=repair_round,
                )  # fmt: skip
                self.progress.stage(generation, index, "proposing", round=repair_round)
                try:
                    proposal = proposer.propose(request)
                except BudgetExceeded as exc:
                    self.stop.set(str(exc))
                    break
                row = self._add_proposal(generation, index, repair_round, request.seed, proposal)
            if row.status == "pending":
                row = self._evaluate(row)
            self.progress.finished(generation, index, row.status, name=row.name or "", score=row.score,
                                   reason=row.reason or "")  # fmt: skip
            if row.status != "rejected":
                break
            repair_of, errors = self._repair_input(row)
        if row is None:
            return SlotResult(generation, index, None, None)
        return SlotResult(generation, index, row.id, row.status, row.score, row.repair_round)

    def _add_proposal(self, generation: int, index: int, repair_round: int, seed: int, p: Proposal) -> CandidateRow:
        fields: dict[str, Any] = dict(
            generation=generation, idx=index, repair_round=repair_round, status="pending", stage="proposed",
            name=p.name or None, thought=p.thought or None, code=p.code, parents=list(p.parents),
            proposer=p.proposer or None, origin=p.extra.get("origin"), seed=seed,
            prompt_id=p.llm_call_ids[-1] if p.llm_call_ids else None,
        )  # fmt: skip
        if p.parse_error is not None:
            # A reply that cannot be parsed is a finished, recorded failure; its text stays in llm_calls.
            stage = "llm" if p.extra.get("llm_failed") else "parse"
            fields.update(status="rejected", stage=stage, reason=p.parse_error)
        cid = self.archive.add_candidate(**fields)
        row = self.archive.get(cid)
        assert row is not None  # just inserted by this thread
        return row

    def _repair_input(self, row: CandidateRow) -> tuple[Proposal | None, tuple[str, ...]]:
        """What the next round is told: the failed attempt and the checker's errors (None: ask afresh)."""
        if row.stage == "llm":
            return None, ()  # the call itself failed: there is no reply to repair, ask the same again
        raw = None
        if row.prompt_id is not None:
            call = self.archive.llm_call(row.prompt_id)
            raw = call.get("reply") if call else None
        failed = Proposal(code=row.code or "", name=row.name or "", thought=row.thought or "",
                          parents=row.parents, proposer=row.proposer or "", raw=raw)  # fmt: skip
        errors = tuple(line for line in (row.reason or "").splitlines() if line.strip())
        return failed, errors

    # -- seeds (generation 0) --------------------------------------------------------------------------

    def evaluate_seed(self, seed: SeedSpec, index: int) -> SlotResult:
        row = self.archive.by_key(proposal_key(0, index, 0))
        if row is None:
            cid = self.archive.add_candidate(
                generation=0, idx=index, status="pending", stage="proposed", name=seed.name, code=seed.code,
                thought=seed.description or None, proposer="library", origin=seed.origin or "library",
                seed=self.run_seed,
            )  # fmt: skip
            row = self.archive.get(cid)
            assert row is not None
        if row.status == "pending":
            row = self._evaluate(row, cache=self.seed_cache is not None)
        self.progress.finished(0, index, row.status, name=row.name or "", score=row.score, reason=row.reason or "")
        return SlotResult(0, index, row.id, row.status, row.score)

    # -- check, dedup, train ---------------------------------------------------------------------------

    def _evaluate(self, row: CandidateRow, *, cache: bool = False) -> CandidateRow:
        g, i = row.generation, row.idx
        name = row.name or ""
        self.progress.stage(g, i, "checking", name=name, round=row.repair_round)
        report = self.check(row.code or "")
        timings: dict[str, Any] = {"check_s": round(report.seconds, 4)}
        if report.name and not row.name:
            name = report.name
        if not report.passed:
            reason = "\n".join(report.errors) or f"rejected at the {report.stage} stage"
            self.archive.update_candidate(row.id, status="rejected", stage=report.stage, reason=reason,
                                          profile=report.profile, timings=timings, name=name or None)  # fmt: skip
            return self._get(row.id)
        fingerprint = report.fingerprint
        with self._dedup_lock:
            twin = self.archive.find_by_fingerprint(fingerprint, exclude_id=row.id) if fingerprint else None
            if twin is not None:
                reason = f"same function as #{twin.id} ({twin.name or 'unnamed'}), by behavioural fingerprint"
                self.archive.update_candidate(
                    row.id, status="duplicate", stage="dedup", reason=reason, fingerprint=fingerprint,
                    profile=report.profile, timings=timings, name=name or None,
                )  # fmt: skip
                return self._get(row.id)
            self.archive.update_candidate(row.id, stage="training", fingerprint=fingerprint, profile=report.profile,
                                          timings=timings, name=name or None)  # fmt: skip
        self.progress.stage(g, i, "training", name=name, round=row.repair_round)
        result = self._cached(fingerprint) if cache else None
        if result is None:
            started = time.time()
            try:
                result = self.executor.submit(self.train, row.code or "", self.train_config).result()
            except TaskError:
                raise  # bad task input: no candidate could be scored, the run must stop with the message
            except Exception as exc:  # an executor failure (a dead worker) is this candidate's failure
                result = RunResult(status="failed", error=f"{type(exc).__name__}: {exc}")
            timings.update(train_start=started, train_end=time.time())
            if cache and self.seed_cache is not None and fingerprint:
                self.seed_cache.put(self.task, fingerprint, self.beta, self.run_seed, self.seed_cache_budget, result)
        else:
            timings["cached"] = True
        timings.update({k: v for k, v in result.timings.items() if isinstance(v, int | float)})
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
        reason = result.error or (result.stderr_tail if result.status != "ok" else None)
        self.archive.update_candidate(row.id, status=result.status, stage="done", score=result.score,
                                      metrics=metrics, timings=timings, reason=reason)  # fmt: skip
        return self._get(row.id)

    def _cached(self, fingerprint: str | None) -> RunResult | None:
        if self.seed_cache is None or not fingerprint:
            return None
        stored = self.seed_cache.get(self.task, fingerprint, self.beta, self.run_seed, self.seed_cache_budget)
        if stored is None:
            return None
        known = {k: stored[k] for k in ("status", "score", "metrics", "timings", "error", "stderr_tail") if k in stored}
        return RunResult(**known)

    def _get(self, cid: int) -> CandidateRow:
        row = self.archive.get(cid)
        assert row is not None  # rows are never deleted
        return row
