"""A conversation with an isolated child: the parent asks, the child answers, both in JSON.

``run_isolated`` hands a child one job and reads one answer. The checker needs more: it must compute every
verdict itself, in a process the candidate never ran in, so it asks the child that runs the candidate for
one call at a time (inputs the parent generated), reads the raw outputs, and decides what to ask next.

``IsolatedSession(target, *args, timeout=...)`` forks ``target(channel, *args)`` from the same pre-started
server as ``run_isolated`` (same process-group leadership, output pipe, core-dump and Ctrl-C handling); the
child talks through ``channel.receive()`` / ``channel.send(message)``. In the parent, ``receive(timeout)`` and
``request(message, timeout)`` wait at most ``timeout`` seconds and never past the session's own deadline;
a child that overruns either, dies, or sends something that is not a well-formed frame of JSON is killed
with its whole process group, and the call raises ``SessionEnded`` with the reason. Frames are a 4-byte
big-endian length and that many bytes of JSON: never a pickle, since the child runs hostile code.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Self

from lossforge.evaluate.isolation.fork_server import (
    MAX_RESULT_BYTES,
    STDERR_TAIL_BYTES,
    IsolatedStatus,
    child_prologue,
    ensure_server,
    exit_outcome,
    get_context,
    kill_group,
    start_child,
    warm_up,
)
from lossforge.evaluate.isolation.interrupt import Cancelled, cancellable

_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class SessionEnd:
    """Why a session ended before the parent closed it: ``status`` as in ``IsolatedResult``."""

    status: IsolatedStatus
    error: str
    overall_timeout: bool = False  # the session's deadline passed, not only one answer's


class SessionEnded(Exception):
    """The child is gone (killed at a deadline, crashed, or sent a malformed frame); ``end`` says which."""

    def __init__(self, end: SessionEnd) -> None:
        super().__init__(end.error)
        self.end = end


class Channel:
    """The child's side: blocking reads of the parent's requests, writes of answers."""

    def __init__(self, requests: Connection, answers: Connection) -> None:
        self._requests = requests.fileno()
        self._answers = answers.fileno()

    def receive(self) -> Any:
        """The next request, or None once the parent has closed the session."""
        header = self._read_exactly(_HEADER.size)
        if header is None:
            return None
        body = self._read_exactly(_HEADER.unpack(header)[0])
        return None if body is None else json.loads(body)

    def send(self, message: Any) -> None:
        data = json.dumps(message).encode()
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(self._answers, view) :]

    def _read_exactly(self, count: int) -> bytes | None:
        data = bytearray()
        while len(data) < count:
            chunk = os.read(self._requests, count - len(data))
            if not chunk:
                return None
            data += chunk
        return bytes(data)


def _session_child(
    target: Callable[..., Any], args: tuple[Any, ...], requests: Connection, answers: Connection, output: Connection
) -> None:
    """Runs in the forked child: the fork server's prologue, then the target's conversation."""
    child_prologue(output)
    try:
        target(Channel(requests, answers), *args)
    except BaseException:
        traceback.print_exc()
        raise


class IsolatedSession:
    """A child forked from the fork server that answers the parent's requests (see the module docstring)."""

    def __init__(self, target: Callable[..., Any], *args: Any, timeout: float) -> None:
        self._target, self._args = target, args
        self.timeout = timeout
        self.ended: SessionEnd | None = None
        self._buffer = bytearray()
        self._output = bytearray()
        self._process: Any = None
        self._stack: Any = None

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> Self:
        context = get_context()
        warm_up()  # the server's start-up (importing torch) must not count against the session's deadline
        ensure_server()
        self._stack = cancellable(self._kill)
        self._cancelled = self._stack.__enter__()
        request_reader, self._request_writer = context.Pipe(duplex=False)
        self._answer_reader, answer_writer = context.Pipe(duplex=False)
        self._output_reader, output_writer = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_session_child,
            args=(self._target, self._args, request_reader, answer_writer, output_writer),
            daemon=True,
        )
        try:
            start_child(self._process)
        finally:
            for end in (request_reader, answer_writer, output_writer):
                end.close()
        self.started = time.perf_counter()
        self.deadline = self.started + self.timeout
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._kill()
        self._process.join()
        for end in (self._request_writer, self._answer_reader, self._output_reader):
            end.close()
        cancelled = self._cancelled()
        self._stack.__exit__(kind, value, tb)
        if cancelled and kind is None:
            raise Cancelled("interrupted: the isolated session was killed")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def stderr_tail(self) -> str:
        return self._output[-STDERR_TAIL_BYTES:].decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ talking

    def request(self, message: Any, *, timeout: float) -> Any:
        """Send ``message`` and wait at most ``timeout`` s (and never past the deadline) for the answer."""
        self._check_open()
        data = json.dumps(message).encode()
        try:  # one small frame into an empty pipe: the child has answered every earlier request
            os.write(self._request_writer.fileno(), _HEADER.pack(len(data)) + data)
        except (BrokenPipeError, OSError):
            self._end_after_exit()
        return self.receive(timeout=timeout)

    def receive(self, *, timeout: float) -> Any:
        """The child's next message; raises ``SessionEnded`` when it does not come in time or is malformed."""
        self._check_open()
        until = min(time.perf_counter() + timeout, self.deadline)
        while True:
            frame = self._frame()
            if frame is not None:
                try:
                    return json.loads(frame)
                except (ValueError, RecursionError):
                    self._end("crashed", "the child sent a malformed answer (not JSON)")
            now = time.perf_counter()
            if now >= until:
                overall = now >= self.deadline
                limit = self.timeout if overall else timeout
                self._end("timeout", f"did not answer within {limit:g} s and was killed", overall=overall)
            self._read_some(until - now)

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self.ended is not None:
            raise SessionEnded(self.ended)
        if self._cancelled():
            raise Cancelled("interrupted: the isolated session was killed")

    def _frame(self) -> bytes | None:
        if len(self._buffer) < _HEADER.size:
            return None
        length = _HEADER.unpack(self._buffer[: _HEADER.size])[0]
        if length > MAX_RESULT_BYTES:
            self._end("error", f"sent an answer of {length} bytes, over the {MAX_RESULT_BYTES}-byte limit")
        if len(self._buffer) < _HEADER.size + length:
            return None
        frame = bytes(self._buffer[_HEADER.size : _HEADER.size + length])
        del self._buffer[: _HEADER.size + length]
        return frame

    def _read_some(self, wait: float) -> None:
        """Read what the answer and output pipes hold (waiting at most ``wait`` s); the output keeps a tail."""
        readers = [self._answer_reader.fileno()]
        if not self._output_reader.closed:
            readers.append(self._output_reader.fileno())
        ready, _, _ = select.select(readers, [], [], max(0.0, min(wait, 0.5)))
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if fd == self._answer_reader.fileno():
                if not chunk:
                    self._end_after_exit()
                self._buffer += chunk
                if len(self._buffer) > MAX_RESULT_BYTES + _HEADER.size:
                    self._end("error", f"sent more than {MAX_RESULT_BYTES} bytes without finishing an answer")
            elif chunk:
                self._output += chunk
                if len(self._output) > 4 * STDERR_TAIL_BYTES:
                    del self._output[:-STDERR_TAIL_BYTES]
            else:
                self._output_reader.close()
        if self._cancelled():
            raise Cancelled("interrupted: the isolated session was killed")

    def _end_after_exit(self) -> None:
        """The child closed its answer pipe: wait briefly for its exit code, then end with its outcome."""
        self._process.join(timeout=1.0)
        self._drain_output()
        status, error = exit_outcome(self._process.exitcode)
        if self._process.exitcode == 0:
            status, error = "crashed", "the child exited before answering"
        self._end(status, error)

    def _drain_output(self) -> None:
        while not self._output_reader.closed:
            ready, _, _ = select.select([self._output_reader.fileno()], [], [], 0.1)
            if not ready:
                return
            chunk = os.read(self._output_reader.fileno(), 1 << 16)
            if not chunk:
                return
            self._output += chunk
            del self._output[: max(0, len(self._output) - 4 * STDERR_TAIL_BYTES)]

    def abort(self, status: IsolatedStatus, error: str) -> SessionEnd:
        """End the session from the parent's side (e.g. an answer that breaks the protocol): kill the child."""
        self._kill()
        if self.ended is None:
            self.ended = SessionEnd(status, error)
        return self.ended

    def _end(self, status: IsolatedStatus, error: str, *, overall: bool = False) -> None:
        self._kill()
        self.ended = SessionEnd(status, error, overall)
        raise SessionEnded(self.ended)

    def _kill(self) -> None:
        if self._process is not None:
            kill_group(self._process)


__all__ = ["Channel", "IsolatedSession", "SessionEnd", "SessionEnded"]
