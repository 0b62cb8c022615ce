"""Ctrl-C for isolated runs: kill the children in progress at once instead of waiting for them.

The children of ``run_isolated`` lead sessions of their own (so a timeout can kill a whole process group),
which also means a terminal's SIGINT never reaches them: without this, an interrupted ``lossforge run`` would
sit until every training in progress had finished. Inside ``with interruptible():`` SIGINT calls
``cancel_running()``, which kills every registered run; those ``run_isolated`` calls, and any started before
the block ends, raise ``Cancelled``. It is a ``KeyboardInterrupt``, so no caller records it as the
candidate's failure (they catch ``Exception``): the run's row stays ``pending`` and ``--resume`` redoes it.
"""

from __future__ import annotations

import itertools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Cancelled(KeyboardInterrupt):
    """An isolated run stopped from outside (Ctrl-C), not by what its target did."""


_kills: dict[int, Callable[[], None]] = {}  # the runs in progress: token -> kill its process group
_tokens = itertools.count()
_lock = threading.Lock()
_cancelled = threading.Event()


@contextmanager
def cancellable(kill: Callable[[], None]) -> Iterator[Callable[[], bool]]:
    """Register a run for the time of the block; yields ``cancelled()``. Raises ``Cancelled`` at once when
    runs are being cancelled already."""
    with _lock:
        if _cancelled.is_set():
            raise Cancelled("interrupted before this isolated run started")
        token = next(_tokens)
        _kills[token] = kill
    try:
        yield _cancelled.is_set
    finally:
        with _lock:
            del _kills[token]


def cancel_running() -> None:
    """Kill every registered run; they, and runs started until ``interruptible`` ends, raise ``Cancelled``."""
    _cancelled.set()
    with _lock:
        kills = list(_kills.values())
    for kill in kills:
        kill()


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT runs ``cancel_running()`` and then raises ``KeyboardInterrupt`` as usual.

    No handler is installed outside the main thread (only it may set signal handlers) or where SIGINT is ignored
    (``nohup``; a shell's background job keeps ignoring it). Whichever way the block ends, a cancellation made
    inside it (by SIGINT or a direct ``cancel_running()``) ends with it: later runs start again.
    """
    previous = signal.getsignal(signal.SIGINT)
    handles = threading.current_thread() is threading.main_thread() and previous is not signal.SIG_IGN

    def on_interrupt(signum: int, frame: Any) -> None:
        cancel_running()
        raise KeyboardInterrupt

    if handles:
        signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        if handles:
            signal.signal(signal.SIGINT, previous)
        _cancelled.clear()


__all__ = ["Cancelled", "cancel_running", "cancellable", "interruptible"]
