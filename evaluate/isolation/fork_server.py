"""Run untrusted code in a fresh, locked-down process without paying Python's start-up cost each time.

Two pieces, used together by the checker and by the training engine:

``run_isolated(target, *args, limits=..., timeout=...)``
    Runs ``target(*args)`` in a new process forked from a pre-started server that already imported torch
    (multiprocessing's ``forkserver`` context, with ``torch`` preloaded), so a call costs milliseconds instead
    of the seconds an ``import torch`` takes. The caller's ``__main__`` is imported in a child only when the
    target needs it (``_DeferredMain``): a script without a main guard is never run a second time. The child
    becomes the leader of its own process group (``setsid``); on timeout the whole group is killed with
    SIGKILL, and it is killed again after a normal exit so no grandchild outlives the run. The child's stdout
    and stderr go to a pipe whose last few KiB come back as ``stderr_tail``. Core dumps are disabled so a
    crash leaves no file behind.

    ``run_isolated`` does **not** apply the runtime protections: a target does its trusted setup first
    (the training engine loads a model and tokenizer, imports transformers/trl, opens files), then calls
    ``apply_runtime_protections(limits)`` itself, then runs candidate code. ``target`` must be a
    module-level function (it is pickled by reference) and must return a JSON-serialisable value: the
    result travels back as JSON, never as a pickle, because the child may run hostile code that could
    write to the result pipe, and unpickling its bytes would execute code in the parent.

``apply_runtime_protections(limits)`` and ``Limits``
    Defined in ``lossforge.evaluate.isolation.lockdown`` and re-exported here: called inside the child, after
    trusted setup and before untrusted code; rlimits, a network namespace, a seccomp filter and an audit
    hook, each reported as ``"on"`` or ``"unavailable: <reason>"``.

``preload(modules)``, ``start_server()``, ``warm_up()``
    Name modules for the server to import once (before it starts), launch it early, or wait until it is
    ready, so that no run's timeout pays for the server's start-up.

Ctrl-C inside ``lossforge.evaluate.isolation.interrupt.interruptible()`` kills the runs in progress: their
``run_isolated`` calls raise ``Cancelled`` (see that module).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from lossforge.evaluate.isolation.deferred_main import defer_main_in_children, in_fork_server
from lossforge.evaluate.isolation.environment import process_environment_reduced
from lossforge.evaluate.isolation.interrupt import Cancelled, cancellable
from lossforge.evaluate.isolation.lockdown import Limits, apply_runtime_protections

IsolatedStatus = Literal["ok", "timeout", "crashed", "memory", "error"]

STDERR_TAIL_BYTES = 8192
MAX_RESULT_BYTES = 16 * 1024 * 1024  # a result larger than this is hostile or a bug; the child is killed


@dataclass(frozen=True)
class IsolatedResult:
    """Outcome of ``run_isolated``. ``value`` is the JSON round-trip of what the target returned."""

    status: IsolatedStatus
    value: Any = None
    error: str | None = None
    stderr_tail: str = ""
    seconds: float = 0.0
    exitcode: int | None = None


# --------------------------------------------------------------------------------------------- the server

_PRELOAD: list[str] = ["torch", __name__]
_OWNER_ENV = "LOSSFORGE_FORKSERVER_OWNER"  # the pid of the process that started the server
_context: Any = None


def preload(modules: Iterable[str]) -> None:
    """Add modules for the fork server to import once; has no effect after the server has started."""
    for module in modules:
        if module not in _PRELOAD:
            _PRELOAD.append(module)


def get_context() -> Any:
    """The forkserver context, started (importing torch once) on first use."""
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(_PRELOAD))
        os.environ[_OWNER_ENV] = str(os.getpid())
        _context = context
    return _context


def start_server() -> None:
    """Launch the fork server without waiting for it: its torch import overlaps with the caller's own imports.

    Call ``preload`` first for the modules children will need; ``warm_up`` (or the first run) waits for it.
    """
    ensure_server()


_server_ready = False
_server_lock = threading.Lock()  # check_many runs sandboxes from several threads
_start_lock = threading.Lock()


def _server_alive(pid: int) -> bool:
    """Whether the server process exists and is not a zombie (without reaping it: multiprocessing does that)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def ensure_server() -> None:
    """Start the fork server, or restart a dead one, with the environment of ``candidate_environment()``.

    Every child that runs candidate code is forked from the server, so the server must never have held a
    secret: not in ``os.environ``, not in its initial environment block (``/proc/self/environ``), not in freed
    memory. multiprocessing starts it with the C environment of this process, which is reduced meanwhile.
    """
    from multiprocessing import forkserver

    get_context()
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is not None and _server_alive(pid):
        return
    with _start_lock, process_environment_reduced():
        forkserver.ensure_running()


def warm_up() -> None:
    """Start the fork server and wait until it has imported torch, so no run's timeout pays for that.

    ``run_isolated`` calls it; call it earlier to move the start-up (seconds) out of the first run.
    """
    global _server_ready
    with _server_lock:
        if _server_ready:
            return
        ensure_server()
        process = get_context().Process(target=_ready, daemon=True)
        process.start()  # answered only once the server has finished its preloads
        process.join()
        _server_ready = True


def _ready() -> None:
    """The no-op child of ``warm_up``."""


# --------------------------------------------------------------------------------------------- one run


def child_prologue(output: Connection) -> None:
    """First steps of every child forked from the server: own process group, no core dumps, output to the pipe."""
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Semaphores made here (tqdm's lock, created by `datasets.map` in TRL) are then unlinked at once instead
    # of being registered with the caller's resource tracker: the lock-down refuses the unlink at exit and
    # the group is SIGKILLed, so the tracker would report them "leaked" when the caller exits.
    multiprocessing.set_start_method("fork", force=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(output.fileno(), 1)
    os.dup2(output.fileno(), 2)
    output.close()
    _silence_inherited_service_pipes()


def _silence_inherited_service_pipes() -> None:
    """Point the write ends every child inherits from the fork server's services at ``/dev/null``.

    A child holds the write end of the caller's liveness pipe to the server and of the resource tracker's
    pipe. Children never start processes (the lock-down refuses it), but code that writes into those pipes
    would stop the server ("Not at EOF?") and the tracker, and with them every later run of the caller.
    """
    from multiprocessing import forkserver, resource_tracker

    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (forkserver._forkserver._forkserver_alive_fd, resource_tracker._resource_tracker._fd):
            if isinstance(fd, int) and fd > 2:
                os.dup2(null, fd)
    finally:
        os.close(null)


def start_child(process: Any) -> None:
    """``process.start()``, restarting the fork server once if it died since the last run (a child that broke
    its pipes, an OOM kill): the caller's next run must not fail for what an earlier child did."""
    from multiprocessing import forkserver

    try:
        process.start()
    except (ConnectionError, EOFError, OSError):
        forkserver._forkserver._stop()
        ensure_server()
        process.start()


def _child_main(target: Callable[..., Any], args: tuple[Any, ...], result: Connection, output: Connection) -> None:
    """Runs in the forked child: own process group, output to the pipe, result as JSON."""
    child_prologue(output)
    try:
        payload: dict[str, Any] = {"status": "ok", "value": target(*args)}
    except MemoryError as exc:
        payload = {"status": "memory", "error": f"MemoryError: {exc}"}
    except BaseException as exc:  # noqa: BLE001 — everything, SystemExit included, is reported back rather than raised
        traceback.print_exc()
        payload = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    try:
        data = json.dumps(payload).encode()
    except (TypeError, ValueError) as exc:
        data = json.dumps({"status": "error", "error": f"the target's result is not JSON-serialisable: {exc}"}).encode()
    fd = result.fileno()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    result.close()
    sys.stdout.flush()
    sys.stderr.flush()


def run_isolated(
    target: Callable[..., Any], *args: Any, limits: Limits | None = None, timeout: float | None = None
) -> IsolatedResult:
    """Run ``target(*args)`` in a fresh process forked from the torch-loaded server (see module docstring).

    Never raises for what the target does: a timeout, crash, memory exhaustion or exception becomes the
    status of the result. ``limits.wall_seconds`` is the timeout when ``timeout`` is None; the limits are
    otherwise the target's to apply through ``apply_runtime_protections``. Raises ``Cancelled`` after
    ``cancel_running()`` (Ctrl-C inside ``interruptible()``).
    """
    limits = limits or Limits()
    timeout = limits.wall_seconds if timeout is None else timeout
    context = get_context()
    warm_up()  # the server's start-up (importing torch) must not count against the target's timeout
    ensure_server()  # restarted with the reduced environment if it died
    result_reader, result_writer = context.Pipe(duplex=False)
    output_reader, output_writer = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(target, args, result_writer, output_writer), daemon=True)
    start = time.perf_counter()
    with cancellable(lambda: kill_group(process)) as cancelled:
        try:
            start_child(process)
        finally:
            result_writer.close()
            output_writer.close()
        try:
            if cancelled():  # interrupted while it started: do not wait for a run nobody wants
                kill_group(process)
            result, output, outcome = _collect(process, result_reader, output_reader, start + timeout)
        finally:
            kill_group(process)
            process.join()
        if cancelled():
            raise Cancelled("interrupted: the isolated run was killed")
    seconds = time.perf_counter() - start
    result_reader.close()
    output_reader.close()
    tail = output[-STDERR_TAIL_BYTES:].decode("utf-8", errors="replace")
    return _interpret(outcome, bytes(result), process.exitcode, tail, seconds, timeout)


def _collect(
    process: Any, result_reader: Connection, output_reader: Connection, deadline: float
) -> tuple[bytearray, bytearray, str]:
    """Read result and output until both pipes close; ``outcome`` is "done", "timeout" or "oversized"."""
    result, output = bytearray(), bytearray()
    buffers = {result_reader.fileno(): result, output_reader.fileno(): output}
    sentinel = process.sentinel
    exited_at: float | None = None
    while buffers:
        now = time.perf_counter()
        if now >= deadline:
            return result, output, "timeout"
        # After the child exits, a grandchild may still hold the pipes open: give it a moment, not forever.
        if exited_at is not None and now - exited_at > 0.5:
            break
        waiting = [*buffers, sentinel] if exited_at is None else list(buffers)
        ready, _, _ = select.select(waiting, [], [], min(deadline - now, 0.5))
        for fd in ready:
            if fd == sentinel:
                exited_at = time.perf_counter()
                kill_group(process)
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                del buffers[fd]
                continue
            buffer = buffers[fd]
            buffer += chunk
            if buffer is output and len(output) > 4 * STDERR_TAIL_BYTES:
                del output[:-STDERR_TAIL_BYTES]  # keep only the tail of a flood of output
            if buffer is result and len(result) > MAX_RESULT_BYTES:
                return result, output, "oversized"
    return result, output, "done"


def kill_group(process: Any) -> None:
    """SIGKILL the child's process group (it called setsid, so the group id is its pid) and the child."""
    if process.pid is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone, or the child died before its setsid
    if process.exitcode is None:
        process.kill()


def _interpret(
    outcome: str, raw: bytes, exitcode: int | None, tail: str, seconds: float, timeout: float
) -> IsolatedResult:
    def result(status: IsolatedStatus, error: str | None, value: Any = None) -> IsolatedResult:
        return IsolatedResult(status, value, error, tail, seconds, exitcode)

    if outcome == "timeout":
        return result("timeout", f"did not finish within the wall-clock limit of {timeout:g} s and was killed")
    if outcome == "oversized":
        return result("error", f"returned more than {MAX_RESULT_BYTES} bytes of result and was killed")
    if raw:
        try:
            payload = json.loads(raw)
            status = payload["status"]
            if status not in ("ok", "error", "memory"):
                raise ValueError(status)
        except (ValueError, KeyError, TypeError):
            return result("crashed", "the child process sent back a malformed result")
        return result(status, payload.get("error"), payload.get("value"))
    return result(*exit_outcome(exitcode))


def exit_outcome(exitcode: int | None) -> tuple[IsolatedStatus, str]:
    """The status and sentence for a child that ended without answering."""
    if exitcode is not None and exitcode < 0:
        signum = -exitcode
        name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
        if signum == signal.SIGXCPU:
            return "timeout", "exceeded its CPU-time limit and was killed (SIGXCPU)"
        if signum == signal.SIGKILL:
            return "memory", "was killed by SIGKILL without a timeout, most likely for exhausting memory"
        return "crashed", f"the process was killed by signal {name}"
    return "crashed", f"the process exited with code {exitcode} without returning a result"


__all__ = [
    "Cancelled",
    "IsolatedResult",
    "Limits",
    "apply_runtime_protections",
    "preload",
    "run_isolated",
    "start_server",
    "warm_up",
]

if in_fork_server(_OWNER_ENV):  # last, so that the caller's script can import everything defined above
    # The server and its children print nothing to the caller's stdout, which may be a `--json` stream.
    os.dup2(2, 1)
    defer_main_in_children()
