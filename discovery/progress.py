"""What a run shows while it works: generation, each candidate's stage, best so far, LLM tokens and cost.

Everything goes to stderr, so stdout stays clean for ``--json``. On a terminal it is a ``rich`` live table
refreshed a few times a second from its own thread (the loop only updates a dict under a lock, which keeps
the display out of the loop's time); elsewhere (CI logs, pipes) it prints one line per finished candidate
and per generation, which reads well in a log file.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

_STYLE = {"ok": "green", "rejected": "yellow", "duplicate": "cyan", "diverged": "red", "failed": "red",
          "timeout": "red", "pending": "white"}  # fmt: skip


@dataclass
class _Slot:
    stage: str = "waiting"
    name: str = ""
    status: str = "pending"
    score: float | None = None
    round: int = 0


class Progress:
    """Progress sink of a run. The base class is silent (``progress=False``, library use)."""

    def start(self, generations: int, population: int, seeds: int) -> None: ...

    def generation(self, generation: int) -> None: ...

    def stage(self, generation: int, index: int, stage: str, *, name: str = "", round: int = 0) -> None: ...

    def finished(self, generation: int, index: int, status: str, *, name: str = "", score: float | None = None,
                 reason: str = "") -> None: ...  # fmt: skip

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
        self._best: tuple[float, str, int, int] | None = None  # (score, name, generation, index)
        self._llm = (0, 0, 0.0)
        self._notes: list[str] = []
        self._started = time.monotonic()
        self._live: Live | None = None
        self._refresh = refresh_per_second

    # -- events ----------------------------------------------------------------------------------------

    def start(self, generations: int, population: int, seeds: int) -> None:
        self._generations = generations
        self._started = time.monotonic()
        if self.console.is_terminal:
            self._live = Live(
                _Renderable(self), console=self.console, refresh_per_second=self._refresh, transient=False
            )
            self._live.start()
        else:
            self.console.print(f"lossforge run: {seeds} seeds, then {generations} generation(s) x {population}")

    def generation(self, generation: int) -> None:
        with self._lock:
            self._generation = generation
            # Keep the table to the current generation: earlier ones are summarised by "best so far".
            self._slots = {key: slot for key, slot in self._slots.items() if key[0] == generation}
        if self._live is None:
            label = "seeds" if generation == 0 else f"{generation} of {self._generations}"
            self.console.print(f"generation {label}")

    def stage(self, generation: int, index: int, stage: str, *, name: str = "", round: int = 0) -> None:
        with self._lock:
            slot = self._slots.setdefault((generation, index), _Slot())
            slot.stage, slot.round = stage, round
            slot.name = name or slot.name

    def finished(self, generation: int, index: int, status: str, *, name: str = "", score: float | None = None,
                 reason: str = "") -> None:  # fmt: skip
        with self._lock:
            slot = self._slots.setdefault((generation, index), _Slot())
            slot.status, slot.score, slot.stage = status, score, "done"
            slot.name = name or slot.name
            if status == "ok" and score is not None and (self._best is None or score > self._best[0]):
                self._best = (score, slot.name, generation, index)
        if self._live is None:
            shown = f" {score:.4g}" if score is not None else ""
            why = f" ({reason.splitlines()[0][:100]})" if reason and status != "ok" else ""
            self.console.print(
                f"  g{generation} #{index} {slot.name or '?'}: {status}{shown}{why}", highlight=False, soft_wrap=True
            )

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
            generation = self._generation
        label = "seeds" if generation == 0 else f"{generation}/{self._generations}"
        elapsed = time.monotonic() - self._started
        header = Text(f"generation {label}  |  {elapsed:5.0f}s  |  LLM {calls} calls, {tokens} tokens, ${cost:.4f}")
        table = Table(box=None, padding=(0, 1), show_edge=False)
        for column in ("#", "candidate", "stage", "status", "score"):
            table.add_column(column)
        for (_, index), slot in slots:
            stage = slot.stage if slot.round == 0 else f"{slot.stage} (repair {slot.round})"
            score = f"{slot.score:.4g}" if slot.score is not None else ""
            table.add_row(str(index), slot.name, stage, Text(slot.status, style=_STYLE.get(slot.status, "")), score)
        best_line = (
            Text(f"best so far: {best[1]} (g{best[2]} #{best[3]}) {best[0]:.4g}", style="bold")
            if best else Text("best so far: -")
        )  # fmt: skip
        return Group(header, table, best_line, *(Text(n, style="dim") for n in notes))


class _Renderable:
    """Re-rendered by ``Live`` on every refresh, from its own thread."""

    def __init__(self, progress: RichProgress) -> None:
        self.progress = progress

    def __rich__(self) -> Any:
        return self.progress.render()
