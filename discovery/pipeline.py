"""One generation, start to finish: propose -> parse -> static policy -> sandbox -> fingerprint dedup ->
training + fitness -> archive, with up to R repair rounds fed by the checker's errors.

A slot is (generation, index); each attempt is one archive row keyed ``g{gen}-i{idx}-r{round}``. A generation
runs in rounds: the round's proposals are requested concurrently, their rows are written in index order
(pending, with the reply: an LLM reply is paid for and must never be asked for twice), checked concurrently
(sub-second sandboxed forks), and admitted in index order (dedup against the archive); admitted candidates
start training at once and the rejected ones go on to the next round. Only proposing and checking are waited
for, never training; and because rows are written and deduplicated in a fixed order, archive ids and dedup
verdicts are the same in every run of the same config, so the history shown to the next generation is too.

Every slot is resumable from the archive alone:

- a finished row (any status but ``pending``) is never redone; a ``rejected`` one feeds the next repair round
  from its stored reply and errors, exactly as it did in the first run;
- a ``pending`` row (a killed run) is re-checked and re-trained from its stored code, without a new request,
  on the seeds it had not finished (each finished seed is an archive ``seed_runs`` entry);
- a missing row is proposed afresh with the slot's seed, so it matches what an uninterrupted run proposed.

Nothing here raises into the loop for a bad candidate: every outcome becomes a row. Only ``BudgetExceeded``
(stop proposing, finish cleanly), configuration errors of the proposer and ``TaskError`` (abort) leave early.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lossforge.discovery.executors import Executor
from lossforge.discovery.progress import Progress
from lossforge.discovery.proposers.base import HistoryEntry, Proposal, ProposalRequest, Proposer
from lossforge.discovery.scoring import fidelity as halving
from lossforge.discovery.scoring.multi_seed import Baseline, SeedRun, aggregate, train_on_seeds, with_paired
from lossforge.discovery.scoring.seeds import derive_seed
from lossforge.discovery.search.novelty import near_duplicate
from lossforge.discovery.storage.archive import Archive, CandidateRow, proposal_key
from lossforge.discovery.storage.seed_cache import SeedCache
from lossforge.evaluate.checking.check_report import CheckReport
from lossforge.evaluate.checking.parse import ParsedProposal
from lossforge.evaluate.llm import BudgetExceeded
from lossforge.evaluate.training.result import RunResult

CheckFn = Callable[[ParsedProposal], CheckReport]
TrainFn = Callable[[str, Any], RunResult]


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
class SeedSpec:
    """A library candidate evaluated in generation 0."""

    name: str
    code: str
    description: str = ""
    origin: str = ""


class Pipeline:
    """Runs generations against one archive; ``threads`` bounds concurrent proposals and checks.

    Every admitted candidate is trained once per seed of ``seeds`` (default: the run seed alone) and compared,
    seed by seed, with the ``baseline`` seed of generation 0 (``lossforge.discovery.scoring.multi_seed``).
    """

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
        threads: int = 4,
        seeds: Sequence[int] | None = None,
        baseline: str | None = None,
        rank_by: str = "mean",
        fidelity: Any = None,
        near_duplicates: float | None = None,
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
        self.threads = max(1, threads)
        self.seeds = tuple(seeds) if seeds else (run_seed,)
        self.baseline = baseline
        self.rank_by = rank_by
        self.fidelity = fidelity  # a FidelityConfig: successive halving of generations >= 1 (``fidelity``)
        self.near_duplicates = near_duplicates  # None: exact fingerprints only (``lossforge.discovery.search.novelty``)
        self.lessons = (
            ""  # the running lessons the loop sets before each generation (``lossforge.discovery.search.lessons``)
        )

    # -- generations -----------------------------------------------------------------------------------

    def run_seeds(self, seeds: Sequence[SeedSpec]) -> list[CandidateRow]:
        """Generation 0: the library seeds, written in order, checked, deduplicated, trained (or cached)."""
        rows = {}
        for index, seed in enumerate(seeds):
            row = self.archive.by_key(proposal_key(0, index, 0))
            if row is None:
                cid = self.archive.add_candidate(
                    generation=0,
                    idx=index,
                    status="pending",
                    stage="proposed",
                    name=seed.name,
                    code=seed.code,
                    thought=seed.description or None,
                    proposer="library",
                    origin=seed.origin or "library",
                    seed=self.run_seed,
                )
                row = self._get(cid)
            rows[index] = row
        with (
            ThreadPoolExecutor(self.threads, thread_name_prefix="lossforge-check") as checkers,
            ThreadPoolExecutor(len(rows) or 1, thread_name_prefix="lossforge-train") as trainers,
        ):
            trainings = self._check_and_admit(rows, checkers, trainers, cache=self.seed_cache is not None)
            _wait(trainings)
        # The seeds trained side by side with the baseline: their paired differences can be taken only now.
        baseline = self.baseline_scores()
        for row in rows.values():
            current = self._get(row.id)
            stats = with_paired(current.stats, baseline) if current.stats is not None else None
            if stats != current.stats:  # a resumed run finds them done: finished rows are not touched
                self.archive.update_candidate(row.id, stats=stats)
        return [self._get(row.id) for row in rows.values()]

    def baseline_scores(self) -> Baseline | None:
        """The baseline's per-seed scores (generation 0, by name), or None before or without it."""
        if self.baseline is None:
            return None
        for row in self.archive.candidates(generation=0):
            if row.name == self.baseline and row.status == "ok":
                return Baseline.from_stats(row.name, row.id, row.stats)
        return None

    def run_generation(
        self, proposer: Proposer, generation: int, population: int, history: tuple[HistoryEntry, ...]
    ) -> list[CandidateRow]:
        """Generation >= 1: P slots, each with up to R repair rounds; returns each slot's last row."""
        last: dict[int, CandidateRow] = {}
        active = list(range(population))
        with (
            ThreadPoolExecutor(self.threads, thread_name_prefix=f"lossforge-g{generation}") as workers,
            ThreadPoolExecutor(population, thread_name_prefix="lossforge-train") as trainers,
        ):
            trainings: list[Future[None]] = []
            for repair_round in range(self.repair_rounds + 1):
                if not active:
                    break
                rows = self._round_rows(proposer, generation, repair_round, active, last, history, workers)
                trainings += self._check_and_admit(rows, workers, trainers, rung=0 if self.fidelity else None)
                last.update({index: self._get(row.id) for index, row in rows.items()})
                active = [index for index in sorted(rows) if last[index].status == "rejected"]
            _wait(trainings)
            if self.fidelity is not None:
                halving.halve(
                    self.archive,
                    generation,
                    self.fidelity.steps_fractions,
                    self.fidelity.keep,
                    lambda row, rung: self._train(row, False, rung),
                    trainers,
                )
        return [self._get(row.id) for _, row in sorted(last.items())]

    def _round_rows(
        self,
        proposer: Proposer,
        generation: int,
        repair_round: int,
        active: list[int],
        previous: Mapping[int, CandidateRow],
        history: tuple[HistoryEntry, ...],
        workers: ThreadPoolExecutor,
    ) -> dict[int, CandidateRow]:
        """The round's row of each active slot: from the archive, else proposed now (concurrently)."""
        rows: dict[int, CandidateRow] = {}
        requests: dict[int, ProposalRequest] = {}
        for index in active:
            row = self.archive.by_key(proposal_key(generation, index, repair_round))
            if row is not None:
                rows[index] = row
                continue
            repair_of, errors = self._repair_input(previous[index]) if index in previous else (None, ())
            requests[index] = ProposalRequest(
                generation=generation,
                index=index,
                seed=derive_seed(self.run_seed, generation, index, repair_round),
                history=history,
                task=self.task,
                repair_of=repair_of,
                repair_errors=errors,
                repair_round=repair_round,
                lessons=self.lessons,
            )
        if requests and not self.stop.is_set():
            futures = {index: workers.submit(self._propose, proposer, request) for index, request in requests.items()}
            for index in sorted(futures):  # written in index order: archive ids do not depend on timing
                proposal = futures[index].result()
                if proposal is not None:
                    rows[index] = self._add_proposal(requests[index], proposal)
        return dict(sorted(rows.items()))

    def _propose(self, proposer: Proposer, request: ProposalRequest) -> Proposal | None:
        if self.stop.is_set():
            return None
        self.progress.stage(request.generation, request.index, "proposing", round=request.repair_round)
        try:
            return proposer.propose(request)
        except BudgetExceeded as exc:
            self.stop.set(str(exc))
            return None

    def _add_proposal(self, request: ProposalRequest, p: Proposal) -> CandidateRow:
        call_ids = [self.archive.record_call(call) for call in p.llm_calls]
        if call_ids:
            self.progress.llm(*self.archive.llm_totals())
        fields: dict[str, Any] = {
            "generation": request.generation,
            "idx": request.index,
            "repair_round": request.repair_round,
            "status": "pending",
            "stage": "proposed",
            "name": p.name or None,
            "thought": p.thought or None,
            "code": p.code,
            "parents": list(p.parents),
            "proposer": p.proposer or None,
            "origin": p.extra.get("origin"),
            "seed": request.seed,
            "prompt_id": call_ids[-1] if call_ids else None,
        }
        if p.parse_error is not None:
            # A reply that cannot be parsed is a finished, recorded failure; its text stays in llm_calls.
            stage = "llm" if p.extra.get("llm_failed") else "parse"
            fields.update(status="rejected", stage=stage, reason=p.parse_error)
        return self._get(self.archive.add_candidate(**fields))

    def _repair_input(self, row: CandidateRow) -> tuple[Proposal | None, tuple[str, ...]]:
        """What the next round is told: the failed attempt and the checker's errors (None: ask afresh)."""
        row = self._get(row.id)
        if row.stage == "llm":
            return None, ()  # the call itself failed: there is no reply to repair, ask the same again
        raw = None
        if row.prompt_id is not None:
            call = self.archive.llm_call(row.prompt_id)
            raw = call.get("reply") if call else None
        failed = Proposal(
            code=row.code or "",
            name=row.name or "",
            thought=row.thought or "",
            parents=row.parents,
            proposer=row.proposer or "",
            raw=raw,
        )
        errors = tuple(line for line in (row.reason or "").splitlines() if line.strip())
        return failed, errors

    # -- check, dedup, train ---------------------------------------------------------------------------

    def _check_and_admit(
        self,
        rows: Mapping[int, CandidateRow],
        checkers: ThreadPoolExecutor,
        trainers: ThreadPoolExecutor,
        *,
        cache: bool = False,
        rung: int | None = None,
    ) -> list[Future[None]]:
        """Check the pending rows concurrently, then reject / deduplicate / start training in index order.

        Rows already finished (resumed, or unparseable replies) and rows that stop here are reported now;
        the ones admitted to training are reported when their training ends.
        """
        for row in rows.values():
            if row.status != "pending":
                self._report(row)
        pending = {i: row for i, row in rows.items() if row.status == "pending"}
        for row in pending.values():
            self.progress.stage(row.generation, row.idx, "checking", name=row.name or "", round=row.repair_round)
        # The proposer parsed its reply once; the checker takes the parsed proposal as it is.
        parsed = {
            i: ParsedProposal(thought=row.thought or "", name=row.name or "", code=row.code or "")
            for i, row in pending.items()
        }
        reports = {i: checkers.submit(self.check, parsed[i]) for i in pending}
        trainings = []
        for index in sorted(pending):
            row, report = pending[index], reports[index].result()
            if self._admit(row, report):
                trainings.append(trainers.submit(self._train, self._get(row.id), cache, rung))
            else:
                self._report(self._get(row.id))
        return trainings

    def _admit(self, row: CandidateRow, report: CheckReport) -> bool:
        """Record the check's verdict; True when the candidate goes on to training."""
        timings: dict[str, Any] = {"check_s": round(report.seconds, 4)}
        name = row.name or report.name or None
        if not report.passed:
            reason = "\n".join(report.errors) or f"rejected at the {report.stage} stage"
            self.archive.update_candidate(
                row.id,
                status="rejected",
                stage=report.stage,
                reason=reason,
                profile=report.profile,
                timings=timings,
                name=name,
            )
            return False
        fingerprint = report.fingerprint
        twin = self.archive.find_by_fingerprint(fingerprint, exclude_id=row.id) if fingerprint else None
        reason = f"same function as #{twin.id} ({twin.name or 'unnamed'}), by behavioural fingerprint" if twin else None
        if reason is None and self.near_duplicates is not None:
            near = near_duplicate(self.archive, report.profile, self.near_duplicates, row.id)
            reason = near.reason() if near is not None else None
        if reason is not None:
            self.archive.update_candidate(
                row.id,
                status="duplicate",
                stage="dedup",
                reason=reason,
                fingerprint=fingerprint,
                profile=report.profile,
                timings=timings,
                name=name,
            )
            return False
        # The fingerprint is stored before training starts, so a later twin is caught even while this trains.
        self.archive.update_candidate(
            row.id, stage="training", fingerprint=fingerprint, profile=report.profile, timings=timings, name=name
        )
        return True

    def _train(self, row: CandidateRow, cache: bool, rung: int | None = None) -> None:
        """Train on the run's seeds (or at ``rung`` of successive halving) and store the aggregate on the row."""
        self.progress.stage(row.generation, row.idx, "training", name=row.name or "", round=row.repair_round)
        fingerprint = row.fingerprint if cache and self.seed_cache is not None else None
        config, seeds, full = self.train_config, self.seeds, True
        if rung is not None:
            fractions = self.fidelity.steps_fractions
            config, seeds = halving.rung_setup(config, seeds, fractions, rung, self._full_steps())
            full = rung == len(fractions) - 1
        finished = self.archive.seed_runs(row.id, config.steps)  # a killed run's finished seeds of this candidate

        def earlier(seed: int) -> SeedRun | None:
            if seed in finished:
                stored = finished[seed]
                return SeedRun(seed, RunResult.from_dict(stored["result"]), stored["started"], stored["ended"])
            hit = self._cached(fingerprint, seed) if fingerprint else None
            return None if hit is None else SeedRun(seed, hit)

        def store(run: SeedRun) -> None:  # each store keeps only what a rerun reproduces
            self.archive.record_seed_run(row.id, config.steps, run.seed, run.result.to_dict(), run.started, run.ended)
            if fingerprint:
                self._store(fingerprint, run.seed, run.result)

        runs = train_on_seeds(self.executor, self.train, row.code or "", config, seeds, earlier=earlier, store=store)
        # Paired differences only at the full budget: the baseline was trained at it.
        outcome = aggregate(
            runs,
            rank_by=self.rank_by,
            baseline=self.baseline_scores() if full else None,  # type: ignore[arg-type]
            rung=rung,
        )
        stats = outcome.stats
        if rung is not None and stats is not None:  # a failed rung ends the candidate: no statistics, a reason
            stats = halving.with_rung(row.stats, stats, rung, config.steps or self._full_steps(), outcome.status)
        timings = halving.merge_timings(row.timings, outcome.timings) if rung else {**row.timings, **outcome.timings}
        self.archive.update_candidate(
            row.id,
            status=outcome.status,
            stage="done",
            score=outcome.score,
            metrics=outcome.metrics,
            timings=timings,
            reason=outcome.reason,
            stats=stats,
        )
        self._report(self._get(row.id))

    def _full_steps(self) -> int:
        return halving.full_steps(self.train_config.steps, self.task)

    def _report(self, row: CandidateRow) -> None:
        self.progress.finished(
            row.generation, row.idx, row.status, name=row.name or "", score=row.score, reason=row.reason or ""
        )

    def _cached(self, fingerprint: str, seed: int) -> RunResult | None:
        assert self.seed_cache is not None
        stored = self.seed_cache.get(self.task, fingerprint, self.beta, seed, self.seed_cache_budget)
        return None if stored is None else RunResult.from_dict(stored)

    def _store(self, fingerprint: str, seed: int, result: RunResult) -> None:
        assert self.seed_cache is not None
        self.seed_cache.put(self.task, fingerprint, self.beta, seed, self.seed_cache_budget, result)

    def _get(self, cid: int) -> CandidateRow:
        row = self.archive.get(cid)
        assert row is not None  # rows are never deleted
        return row


def _wait(futures: Sequence[Future[Any]]) -> None:
    """Wait for every training; the first error (a TaskError) is re-raised once all have ended."""
    error: BaseException | None = None
    for future in futures:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others finished
            error = error or exc
    if error is not None:
        raise error
