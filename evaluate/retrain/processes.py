"""Finding and stopping every process of one launch, whatever session each one leads.

``accelerate launch`` starts in a session of its own, but it is not the only session of a launch: torch's
elastic launcher starts every rank with ``start_new_session=True``, so killing the launcher's process group
leaves the ranks running (a rank waiting in a collective for a rank that has gone waits there for as long as
the process-group timeout). So each process of a launch is marked by a variable of its environment
(``LOSSFORGE_RETRAIN_LAUNCH=<token>``, inherited by every descendant), and ``stop_launch`` finds them by it in
``/proc`` -- ranks, their data-loader workers, orphans already re-parented -- and signals each one: SIGTERM,
then SIGKILL to what is left after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

from lossforge.evaluate.retrain.lockdown import LAUNCH_TAG_VAR

GRACE_S = 10.0


def tagged_processes(token: str) -> list[int]:
    """The live processes whose environment holds ``LOSSFORGE_RETRAIN_LAUNCH=token`` (this user's; Linux)."""
    marker = f"{LAUNCH_TAG_VAR}={token}".encode()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as environ:
                    variables = environ.read().split(b"\0")
            except OSError:  # another user's process, or one that ended meanwhile (a zombie reads as empty)
                continue
            if marker in variables:
                found.append(int(entry.name))
    return found


def stop_launch(process: subprocess.Popen[bytes], token: str, *, grace_s: float = GRACE_S) -> list[int]:
    """Stop ``process`` (the launcher, leader of its own session) and every process tagged with ``token``:
    SIGTERM, then SIGKILL after ``grace_s`` seconds. Returns the pids that needed SIGKILL."""
    with _no_interrupts():  # a second Ctrl-C must not leave the launch half stopped
        _signal_all(process, token, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(process, token):
            time.sleep(0.1)
        survivors = tagged_processes(token)
        if process.poll() is None or survivors:
            _signal_all(process, token, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and _alive(process, token):
            time.sleep(0.1)
        process.wait()
    return survivors


def _alive(process: subprocess.Popen[bytes], token: str) -> bool:
    return process.poll() is None or bool(tagged_processes(token))


def _signal_all(process: subprocess.Popen[bytes], token: str, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # none left in the group: the usual case
        os.killpg(process.pid, signum)
    for pid in tagged_processes(token):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """SIGINT is ignored meanwhile (in the main thread; elsewhere it cannot be changed and is not delivered)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["GRACE_S", "stop_launch", "tagged_processes"]
