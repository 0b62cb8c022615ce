"""A conversation with an isolated child (evaluate/isolation/session.py): answers in time, or a clean end."""

from __future__ import annotations

import os
import struct
import time
from typing import Any

import pytest
from lossforge.evaluate.isolation.session import Channel, IsolatedSession, SessionEnded


def echo(channel: Channel, prefix: str) -> None:
    while (message := channel.receive()) is not None:
        channel.send({"echo": f"{prefix}{message['text']}"})


def silent(channel: Channel) -> None:
    channel.receive()
    time.sleep(60)


def half_a_frame(channel: Channel) -> None:
    channel.receive()
    os.write(channel._answers, struct.pack(">I", 100) + b'{"partial":')
    time.sleep(60)


def not_json(channel: Channel) -> None:
    channel.receive()
    os.write(channel._answers, struct.pack(">I", 5) + b"\xff\xfe{[(")
    time.sleep(60)


def huge_frame(channel: Channel) -> None:
    channel.receive()
    os.write(channel._answers, struct.pack(">I", 2**31))
    time.sleep(60)


def exits(channel: Channel) -> None:
    channel.receive()
    print("leaving now", flush=True)
    os._exit(3)


def test_a_child_answers_each_request_in_order() -> None:
    with IsolatedSession(echo, "> ", timeout=30) as session:
        answers = [session.request({"text": str(i)}, timeout=10) for i in range(5)]
    assert answers == [{"echo": f"> {i}"} for i in range(5)]


@pytest.mark.parametrize(
    ("target", "status", "fragment"),
    [
        (silent, "timeout", "did not answer within 0.5 s"),
        (half_a_frame, "timeout", "did not answer within 0.5 s"),
        (not_json, "crashed", "malformed answer"),
        (huge_frame, "error", "over the"),
        (exits, "crashed", "exited with code 3"),
    ],
)
def test_a_child_that_does_not_answer_properly_is_killed_and_says_why(target: Any, status: str, fragment: str) -> None:
    start = time.perf_counter()
    with IsolatedSession(target, timeout=30) as session:
        with pytest.raises(SessionEnded) as ended:
            session.request({"text": "hello"}, timeout=0.5)
        with pytest.raises(SessionEnded):  # and it stays ended
            session.request({"text": "again"}, timeout=0.5)
        pid = session._process.pid
    assert ended.value.end.status == status and fragment in ended.value.end.error, ended.value.end
    assert time.perf_counter() - start < 10
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group is gone


def test_the_session_deadline_bounds_every_wait() -> None:
    with IsolatedSession(silent, timeout=1.0) as session, pytest.raises(SessionEnded) as ended:
        session.request({"text": "hello"}, timeout=30)
    assert ended.value.end.overall_timeout and "within 1 s" in ended.value.end.error


def test_the_child_output_comes_back_as_a_tail() -> None:
    with IsolatedSession(exits, timeout=30) as session:
        with pytest.raises(SessionEnded):
            session.request({"text": "hello"}, timeout=5)
        assert "leaving now" in session.stderr_tail
