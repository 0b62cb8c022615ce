"""Ctrl-C during `lossforge train`: the training in progress is killed at once, exit 1, one line, no traceback.

The worker leads a session of its own (so a timeout can kill its whole process group), so a terminal's SIGINT
never reaches it; without ``interruptible`` the command would sit until the training finished.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.cli_process import LAUNCHER, cli_env

TINY = "tests.tiny_task:TinyTask"


def _descendants(pid: int) -> int:
    """How many processes descend from ``pid`` (the fork server, then the training worker)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    count, todo = 0, [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        count += len(kids)
        todo += kids
    return count


def test_ctrl_c_stops_the_training_at_once_and_exits_1(tmp_path: Path) -> None:
    # 20000 steps of the tiny task take minutes; an interrupt that waited for them would time this test out.
    command = [
        sys.executable,
        "-c",
        LAUNCHER,
        "train",
        "dpo",
        "--task",
        TINY,
        "--steps",
        "20000",
        "--eval-samples",
        "4",
        "--threads",
        "1",
        "--json",
    ]
    env = {**cli_env(), "LOSSFORGE_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while _descendants(process.pid) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # wait for the fork server and the worker it forks
        time.sleep(3.0)  # into the training itself
        assert process.poll() is None, process.communicate()
        interrupted = time.monotonic()
        process.send_signal(2)  # SIGINT, as a terminal's Ctrl-C
        stdout, stderr = process.communicate(timeout=60)
        stopped_after = time.monotonic() - interrupted
    finally:
        process.kill()
    assert process.returncode == 1, stderr[-3000:]
    assert "error: interrupted; the training in progress was stopped" in stderr and "Traceback" not in stderr
    assert (
        stdout.strip()
        == '{"status": "aborted", "error": "interrupted; the training in progress was stopped and nothing was scored"}'
    )
    assert stopped_after < 30, stopped_after
