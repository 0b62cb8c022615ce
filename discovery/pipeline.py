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

The pipeline runs with ``PipelineSettings``; a check's verdict and the dedup are ``admission``'s, training a
candidate on its seeds (resume, seed cache) is ``candidate_training``'s, and successive halving the
``scoring.fidelity.SuccessiveHalving`` strategy's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lossforge.discovery.admission import admit
from lossforge.discovery.candidate_rows import current_row, report_finished
from lossforge.discovery.candidate_training import CachedResults, CandidateTraining
from lossforge.discovery.executors import Executor
from lossforge.discovery.pipeline_settings import PipelineSettings
from lossforge.discovery.progress import Progress
from lossforge.discovery.proposers.base import HistoryEntry, Proposal, ProposalRequest, ProposerBase
from lossforge.discovery.scoring.fidelity import SuccessiveHalving
from lossforge.discovery.scoring.seed_training import TrainFn
from lossforge.discovery.seeds import derive_seed
from lossforge.discovery.storage.archive import Archive, CandidateRow, proposal_key
from lossforge.discovery.task_training import AWAITING_BASELINE
from lossforge.evaluate.checking.check_report import CheckReport
from lossforge.evaluate.checking.parse import ParsedProposal
from lossforge.evaluate.llm import BudgetExceeded
from lossforge.evaluate.tasks.base import TaskError

CheckFn = Callable[[ParsedProposal], CheckReport]


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


@dataclass(frozen=True)
class _Round:
    """One repair round of a generation, with what each of its requests is shown."""

    generation: int
    repair_round: int
    history: tuple[HistoryEntry, ...]
    lessons: str


class Pipeline:
    """Runs generations against one archive, with ``settings``; the collaborators are the archive, the executor
    that runs trainings, the ``check`` and ``train`` functions, the progress sink, the stop signal and the
    seed cache (``CachedResults``, None: off)."""

    def __init__(
        self,
        settings: PipelineSettings,
        archive: Archive,
        executor: Executor,
        *,
        check: CheckFn,
        train: TrainFn,
        progress: Progress | None = None,
        stop: StopSignal | None = None,
        seed_cache: CachedResults | None = None,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.check = check
        self.progress = progress or Progress()
        self.stop = stop or StopSignal()
        fidelity = settings.fidelity
        self.halving = SuccessiveHalving.from_config(fidelity, settings.task) if fidelity is not None else None
        self.training = CandidateTraining(
            settings, archive, executor, train, self.progress, cached=seed_cache, halving=self.halving
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
                    seed=self.settings.run_seed,
                )
                row = current_row(self.archive, cid)
            rows[index] = row
        with (
            ThreadPoolExecutor(self.settings.threads, thread_name_prefix="lossforge-check") as checkers,
            ThreadPoolExecutor(len(rows) or 1, thread_name_prefix="lossforge-train") as trainers,
        ):
            trainings = self._check_and_admit(rows, checkers, trainers, cache=self.training.cached is not None)
            _wait(trainings)
        self._score_awaiting_rows(list(rows.values()))
        # The seeds trained side by side with the baseline: their paired differences can be taken only now.
        baseline = self.training.baseline_scores()
        for row in rows.values():
            current = current_row(self.archive, row.id)
            stats = current.stats.with_paired(baseline) if current.stats is not None else None
            if stats != current.stats:  # a resumed run finds them done: finished rows are not touched
                self.archive.update_candidate(row.id, stats=stats)
        return [current_row(self.archive, row.id) for row in rows.values()]

    def _score_awaiting_rows(self, rows: list[CandidateRow]) -> None:
        """Multi-task generation 0: aggregate the rows that finished training before the baseline's scales existed
        (their trainings are read back from the archive; the baseline itself never waits); ``TaskError`` when the
        baseline gives no scales. Nothing to do in a one-task run."""
        tasks = self.training.tasks
        if tasks is None:
            return
        for row in rows:
            current = current_row(self.archive, row.id)
            if current.status == "pending" and current.stage == AWAITING_BASELINE:
                if tasks.scales() is None:
                    raise TaskError(tasks.no_scales_message())
                self.training.train(current)

    def run_generation(
        self,
        proposer: ProposerBase,
        generation: int,
        population: int,
        history: tuple[HistoryEntry, ...],
        lessons: str = "",
    ) -> list[CandidateRow]:
        """Generation >= 1: P slots, each with up to R repair rounds; returns each slot's last row. ``history`` and
        ``lessons`` (the running lessons, ``search.lessons``; "" when off) go into every request."""
        last: dict[int, CandidateRow] = {}
        active = list(range(population))
        with (
            ThreadPoolExecutor(self.settings.threads, thread_name_prefix=f"lossforge-g{generation}") as workers,
            ThreadPoolExecutor(population, thread_name_prefix="lossforge-train") as trainers,
        ):
            trainings: list[Future[None]] = []
            for repair_round in range(self.settings.repair_rounds + 1):
                if not active:
                    break
                this_round = _Round(generation, repair_round, history, lessons)
                rows = self._round_rows(proposer, this_round, active, last, workers)
                trainings += self._check_and_admit(rows, workers, trainers, rung=0 if self.halving else None)
                last.update({index: current_row(self.archive, row.id) for index, row in rows.items()})
                active = [index for index in sorted(rows) if last[index].status == "rejected"]
            _wait(trainings)
            if self.halving is not None:
                self.halving.run(self.archive, generation, self.training, trainers)
        return [current_row(self.archive, row.id) for _, row in sorted(last.items())]

    def _round_rows(
        self,
        proposer: ProposerBase,
        this_round: _Round,
        active: list[int],
        previous: Mapping[int, CandidateRow],
        workers: ThreadPoolExecutor,
    ) -> dict[int, CandidateRow]:
        """The round's row of each active slot: from the archive, else proposed now (concurrently)."""
        rows: dict[int, CandidateRow] = {}
        requests: dict[int, ProposalRequest] = {}
        generation, repair_round = this_round.generation, this_round.repair_round
        for index in active:
            row = self.archive.by_key(proposal_key(generation, index, repair_round))
            if row is not None:
                rows[index] = row
                continue
            repair_of, errors = self._repair_input(previous[index]) if index in previous else (None, ())
            requests[index] = ProposalRequest(
                generation=generation,
                index=index,
                seed=derive_seed(self.settings.run_seed, generation, index, repair_round),
                history=this_round.history,
                task=self.settings.task,
                repair_of=repair_of,
                repair_errors=errors,
                repair_round=repair_round,
                lessons=this_round.lessons,
            )
        if requests and not self.stop.is_set():
            futures = {index: workers.submit(self._propose, proposer, request) for index, request in requests.items()}
            for index in sorted(futures):  # written in index order: archive ids do not depend on timing
                proposal = futures[index].result()
                if proposal is not None:
                    rows[index] = self._add_proposal(requests[index], proposal)
        return dict(sorted(rows.items()))

    def _propose(self, proposer: ProposerBase, request: ProposalRequest) -> Proposal | None:
        if self.stop.is_set():
            return None
        self.progress.stage(request.generation, request.index, "proposing", round=request.repair_round)
        try:
            return proposer.propose(request)
        except BudgetExceeded as exc:
            self.stop.set(str(exc))
            return None

    def _add_proposal(self, request: ProposalRequest, p: Proposal) -> CandidateRow:
        call_ids = [self.archive.record_llm_call(call) for call in p.llm_calls]
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
        return current_row(self.archive, self.archive.add_candidate(**fields))

    def _repair_input(self, row: CandidateRow) -> tuple[Proposal | None, tuple[str, ...]]:
        """What the next round is told: the failed attempt and the checker's errors (None: ask afresh)."""
        row = current_row(self.archive, row.id)
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

    # -- check, admit, train ----------------------------------------------------------------------------

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
                report_finished(self.progress, row)
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
            if admit(self.archive, row, report, self.settings.near_duplicates):
                current = current_row(self.archive, row.id)
                trainings.append(trainers.submit(self.training.train, current, cache=cache, rung=rung))
            else:
                report_finished(self.progress, current_row(self.archive, row.id))
        return trainings


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
