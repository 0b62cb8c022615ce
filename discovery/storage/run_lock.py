"""``RunLock(run_dir)``: ``fcntl.flock`` on ``run_dir/lock`` for the life of a run.

A second run on the same directory fails fast instead of interleaving writes with the first. The kernel drops
the lock when the holder dies, so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self


class RunLockError(RuntimeError):
    """The run directory is held by another live run."""


class RunLock:
    """Exclusive lock on a run directory, held from ``acquire()`` (or ``with``) until ``release()``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockError(
                f"run directory {self.run_dir} is in use by a live run (pid {holder}); "
                "wait for it to finish or pass another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: unlinking a lock file races with a process that has just opened it.
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def holding_run(run_dir: str | Path, busy: Callable[[str], BaseException]) -> Iterator[RunLock]:
    """Hold ``run_dir``'s lock for the block; when a live run holds it, raise ``busy(message)`` instead (each caller
    says it its own way: ``LoopError`` for a run, exit 2 for ``lossforge confirm``)."""
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except RunLockError as exc:
        raise busy(str(exc)) from None
    try:
        yield lock
    finally:
        lock.release()


__all__ = ["RunLock", "RunLockError", "holding_run"]
