"""What a run shows while it works: generation, each candidate's stage, best so far, LLM tokens and cost, how many
trainings are done of how many, and an estimate of the time left.

Everything goes to stderr, so stdout stays clean for ``--json``. On a terminal it is a ``rich`` live table
refreshed a few times a second from its own thread (the loop only updates a dict under a lock, which keeps
the display out of the loop's time); elsewhere (CI logs, pipes) it prints one line per finished candidate
and per generation, which reads well in a log file. Either way the first line says what the run will train.

Candidates are shown by their archive id, the id every review command takes (``lossforge show RUN 5``): the
pipeline reports a proposal by its slot (generation, index), and ``ArchiveIds`` finds the row behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from lossforge.discovery.config import RunConfig

_STYLE = {
    "ok": "green",
    "rejected": "yellow",
    "duplicate": "cyan",
    "diverged": "red",
    "failed": "red",
    "timeout": "red",
    "pending": "white",
}
# A candidate with one of these statuses was trained (its seeds count as done trainings).
TRAINED = frozenset({"ok", "diverged", "failed", "timeout"})
# A candidate back this fast came from the seed cache: its time says nothing of the pace of a training.
CACHED_S = 0.2


@dataclass(frozen=True)
class Cost:
    """What a run will train, counted before it starts; both counts are upper bounds.

    ``search``: the library seeds, then every proposal of every generation (rejected and duplicate ones train
    nothing), each on ``seeds`` search seeds and every task (with successive halving, one more training per
    low-fidelity rung; with several tasks, the baseline once more per task and seed, untrained);
    ``confirmation``: the end-of-run confirmation, ``confirm_top`` discovered candidates, the baseline and the best
    library loss on ``confirm_seeds`` held-out seeds, for each confirmation task and beta; ``workers`` train at once.
    """

    search: int
    confirmation: int = 0
    seeds: int = 1
    workers: int = 1
    confirm_top: int = 0
    confirm_seeds: int = 0
    tasks: int = 1  # the tasks each candidate trains on

    @classmethod
    def of(cls, config: RunConfig) -> Cost:
        from lossforge.discovery.executors import planned_concurrency

        search, confirm = config.search, config.search.confirm
        seeds = len(config.search_seeds())
        run_tasks = config.training.run_tasks
        per_candidate = seeds * len(run_tasks)
        per_proposal = per_candidate + (len(search.fidelity.steps_fractions) - 1 if search.fidelity else 0)
        tasks = len(dict.fromkeys((*run_tasks, *confirm.tasks)))
        per_target = confirm.seeds * tasks * max(1, len(confirm.betas))
        # Several tasks: the baseline also trains untrained on each, and so does the confirmation's reference.
        references = per_candidate if len(run_tasks) >= 2 else 0
        targets = confirm.top_k + 2 + (1 if tasks >= 2 else 0)
        return cls(
            search=len(search.seed_candidates) * per_candidate
            + references
            + search.generations * search.population * per_proposal,
            confirmation=targets * per_target if confirm.top_k else 0,
            seeds=seeds,
            workers=planned_concurrency(config.execution.workers, config.execution.workers_per_gpu),
            confirm_top=confirm.top_k,
            confirm_seeds=confirm.seeds,
            tasks=len(run_tasks),
        )

    def sentence(self) -> str:
        """``up to 16 search trainings (...) and up to 25 confirmation trainings (...)``."""
        seeds = "1 seed" if self.seeds == 1 else f"{self.seeds} seeds"
        seeds += f" of each of {self.tasks} tasks" if self.tasks > 1 else ""
        text = f"up to {self.search} search trainings (each candidate on {seeds})"
        if not self.confirmation:
            return f"{text}; no confirmation (search.confirm.top_k is 0)"
        return (
            f"{text} and up to {self.confirmation} confirmation trainings (the top {self.confirm_top}, the baseline "
            f"and the best library loss{' and the untrained reference' if self.tasks > 1 else ''} on "
            f"{self.confirm_seeds} held-out seeds; --confirm-top 0 turns it off)"
        )


class ArchiveIds:
    """The archive id of the row a progress event is about.

    A slot (generation, index) holds one row per repair round. The row reported as finished is the slot's row
    with that status, name, score and reason: the earliest such row not reported yet (a resumed run reports a
    slot's finished rounds in order), else the latest (a candidate trained rung after rung is reported again).
    """

    def __init__(self, rows: Callable[[int], Sequence[Any]]) -> None:
        self._rows = rows  # generation -> its archive rows (``Archive.candidates(generation=...)``)
        self._reported: set[int] = set()
        self._lock = threading.Lock()

    def of_round(self, generation: int, index: int, round: int) -> int | None:
        rows = self._rows(generation)
        return next((row.id for row in rows if row.idx == index and row.repair_round == round), None)

    def finished(
        self, generation: int, index: int, status: str, name: str, score: float | None, reason: str
    ) -> int | None:
        slot = sorted((row for row in self._rows(generation) if row.idx == index), key=lambda row: row.repair_round)
        event = (status, name, score, reason)
        same = [row for row in slot if (row.status, row.name or "", row.score, row.reason or "") == event]
        with self._lock:
            fresh = [row for row in same if row.id not in self._reported]
            chosen = fresh[0] if fresh else same[-1] if same else slot[-1] if slot else None
            if chosen is None:
                return None
            self._reported.add(chosen.id)
            return int(chosen.id)


def about(seconds: float) -> str:
    """``~40 s``, ``~12 min``, ``~3.5 h``: an estimate as progress lines print it."""
    if seconds < 90:
        return f"~{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"~{round(seconds / 60)} min"
    return f"~{seconds / 3600:.1f} h"


def confirm_line(done: dict[str, Any]) -> str:
    """``confirm 3/8: #5 evo_g1_i0 seed 1000: ok 0.0241 (~2 min left)``: one finished confirmation training (the
    ``on_done`` record of ``lossforge.discovery.scoring.confirm.run_trainings``)."""
    where = f" on {done['task']} beta {done['beta']:g}" if done.get("multi") else ""
    score = f" {done['score']:.4g}" if done.get("score") is not None else ""
    left = f" ({about(done['left_s'])} left)" if done.get("left_s") is not None else ""
    who = "the untrained reference" if done["candidate_id"] is None else f"#{done['candidate_id']} {done['name']}"
    return f"confirm {done['done']}/{done['total']}: {who}{where} seed {done['seed']}: {done['status']}{score}{left}"


@dataclass
class _Slot:
    stage: str = "waiting"
    name: str = ""
    status: str = "pending"
    score: float | None = None
    round: int = 0
    cid: int | None = None  # the archive id, once the row exists


class Progress:
    """Progress sink of a run. The base class is silent (``progress=False``, library use)."""

    def start(self, generations: int, population: int, seeds: int, *, cost: Cost | None = None) -> None: ...

    def use_archive(self, rows: Callable[[int], Sequence[Any]]) -> None:
        """``rows(generation)``: the archive's rows of a generation, to show candidates by their archive ids."""

    def generation(self, generation: int) -> None: ...

    def stage(self, generation: int, index: int, stage: str, *, name: str = "", round: int = 0) -> None: ...

    def finished(
        self, generation: int, index: int, status: str, *, name: str = "", score: float | None = None, reason: str = ""
    ) -> None: ...

    def llm(self, calls: int, tokens: int, cost_usd: float) -> None: ...

    def note(self, text: str) -> None: ...

    def stop(self) -> None: ...


class RichProgress(Progress):
    """Live table on a terminal, one line per event elsewhere; always on stderr."""

    def __init__(self, console: Console | None = None, *, refresh_per_second: float = 4.0) -> None:
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._generation = 0
        self._generations = 0
        self._best: tuple[float, str, int | None] | None = None  # (score, name, archive id)
        self._llm = (0, 0, 0.0)
        self._notes: list[str] = []
        self._started = time.monotonic()
        self._live: Live | None = None
        self._refresh = refresh_per_second
        self._ids: ArchiveIds | None = None
        self._cost: Cost | None = None
        self._training_since: dict[tuple[int, int], float] = {}
        self._trained = 0  # search trainings done (a trained candidate counts its seeds)
        self._timed = (0.0, 0)  # wall seconds and trainings of the candidates that really trained

    # -- events ----------------------------------------------------------------------------------------

    def start(self, generations: int, population: int, seeds: int, *, cost: Cost | None = None) -> None:
        self._generations, self._cost = generations, cost
        self._started = time.monotonic()
        planned = f"; {cost.sentence()}" if cost is not None else ""
        shape = f"{seeds} library losses, then {generations} generation(s) x {population} proposals"
        line = f"lossforge run: {shape}{planned}"
        self.console.print(line, highlight=False, soft_wrap=True)
        if self.console.is_terminal:
            self._live = Live(
                _Renderable(self), console=self.console, refresh_per_second=self._refresh, transient=False
            )
            self._live.start()

    def use_archive(self, rows: Callable[[int], Sequence[Any]]) -> None:
        self._ids = ArchiveIds(rows)

    def generation(self, generation: int) -> None:
        with self._lock:
            self._generation = generation
            # Keep the table to the current generation: earlier ones are summarised by "best so far".
            self._slots = {key: slot for key, slot in self._slots.items() if key[0] == generation}
        if self._live is None:
            label = "seeds" if generation == 0 else f"{generation} of {self._generations}"
            self.console.print(f"generation {label}")

    def stage(self, generation: int, index: int, stage: str, *, name: str = "", round: int = 0) -> None:
        cid = None
        if self._live is not None and self._ids is not None and stage != "proposing":  # the live table's id column
            cid = self._ids.of_round(generation, index, round)
        with self._lock:
            slot = self._slots.setdefault((generation, index), _Slot())
            slot.stage, slot.round = stage, round
            slot.name = name or slot.name
            slot.cid = cid if cid is not None else slot.cid
            if stage == "training":
                self._training_since[(generation, index)] = time.monotonic()

    def finished(
        self, generation: int, index: int, status: str, *, name: str = "", score: float | None = None, reason: str = ""
    ) -> None:
        cid = self._ids.finished(generation, index, status, name, score, reason) if self._ids is not None else None
        with self._lock:
            slot = self._slots.setdefault((generation, index), _Slot())
            slot.status, slot.score, slot.stage = status, score, "done"
            slot.name, slot.cid = name or slot.name, cid if cid is not None else slot.cid
            if status == "ok" and score is not None and (self._best is None or score > self._best[0]):
                self._best = (score, slot.name, slot.cid)
            since = self._training_since.pop((generation, index), None)
            counted = self._count_training(status, since)
        if self._live is None:
            shown = f" {score:.4g}" if score is not None else ""
            why = f" ({reason.splitlines()[0][:100]})" if reason and status != "ok" else ""
            where = f"#{slot.cid} " if slot.cid is not None else ""
            done = f"  [{counted}]" if counted else ""
            line = f"  g{generation} {where}{slot.name or '?'}: {status}{shown}{why}{done}"
            self.console.print(line, highlight=False, soft_wrap=True)

    def _count_training(self, status: str, since: float | None) -> str:
        """Count a finished candidate's trainings (under the lock); ``3/16 trainings, ~4 min left``, or ``""``."""
        if self._cost is None or status not in TRAINED:
            return ""
        trainings = self._cost.seeds * self._cost.tasks  # each seed on each task
        self._trained += trainings
        if since is not None and (seconds := time.monotonic() - since) >= CACHED_S:
            self._timed = (self._timed[0] + seconds, self._timed[1] + trainings)
        return self._trainings_text()

    def _trainings_text(self) -> str:
        cost = self._cost
        if cost is None:
            return ""
        done = min(self._trained, cost.search)
        text = f"{done}/{cost.search} trainings"
        seconds, trainings = self._timed
        if trainings:  # the pace of real trainings so far, for the rest of the search and the confirmation
            left = seconds / trainings * (cost.search - done + cost.confirmation) / max(1, cost.workers)
            text += f", {about(left)} left"
        return text

    def llm(self, calls: int, tokens: int, cost_usd: float) -> None:
        with self._lock:
            self._llm = (calls, tokens, cost_usd)

    def note(self, text: str) -> None:
        with self._lock:
            self._notes = [*self._notes[-2:], text]
        if self._live is None:
            self.console.print(text, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- rendering -------------------------------------------------------------------------------------

    def render(self) -> Group:
        with self._lock:
            slots = sorted(self._slots.items())
            best, (calls, tokens, cost), notes = self._best, self._llm, list(self._notes)
            generation, trainings = self._generation, self._trainings_text()
        label = "seeds" if generation == 0 else f"{generation}/{self._generations}"
        elapsed = time.monotonic() - self._started
        counted = f"  |  {trainings}" if trainings else ""
        header = Text(
            f"generation {label}  |  {elapsed:5.0f}s{counted}  |  LLM {calls} calls, {tokens} tokens, ${cost:.4f}"
        )
        table = Table(box=None, padding=(0, 1), show_edge=False)
        for column in ("#", "candidate", "stage", "status", "score"):
            table.add_column(column)
        for _, slot in slots:
            stage = slot.stage if slot.round == 0 else f"{slot.stage} (repair {slot.round})"
            score = f"{slot.score:.4g}" if slot.score is not None else ""
            shown_id = "" if slot.cid is None else str(slot.cid)
            table.add_row(shown_id, slot.name, stage, Text(slot.status, style=_STYLE.get(slot.status, "")), score)
        best_line = Text("best so far: -")
        if best is not None:
            where = f" (#{best[2]})" if best[2] is not None else ""
            best_line = Text(f"best so far: {best[1]}{where} {best[0]:.4g}", style="bold")
        return Group(header, table, best_line, *(Text(n, style="dim") for n in notes))


class _Renderable:
    """Re-rendered by ``Live`` on every refresh, from its own thread."""

    def __init__(self, progress: RichProgress) -> None:
        self.progress = progress

    def __rich__(self) -> Any:
        return self.progress.render()
