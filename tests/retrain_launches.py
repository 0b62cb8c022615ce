"""Launching `lossforge retrain` in the tests: the command line, the recipes shortened to a few steps, and the
processes a launch leaves (its ``--out`` is in the command line of the CLI, of ``accelerate launch`` and of
every rank)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

CLI = "from lossforge.discovery.cli import main; main()"
# The lora recipe, shortened: 2 optimizer steps of 2 pairs per rank, no warm-up, a rate that moves a tiny model.
SHORT = [
    "--set",
    "max_steps=2",
    "--set",
    "per_device_train_batch_size=2",
    "--set",
    "gradient_accumulation_steps=1",
    "--set",
    "warmup_steps=0",
    "--set",
    "learning_rate=0.02",
    "--set",
    "max_length=32",
    "--set",
    "logging_steps=1",
]
# The full recipe, shortened alike: its accumulation is derived from effective_batch_size (2 = 2 pairs x 1 step).
SHORT_FULL = [
    "--recipe",
    "full",
    "--set",
    "max_steps=2",
    "--set",
    "effective_batch_size=2",
    "--set",
    "warmup_steps=0",
    "--set",
    "learning_rate=0.02",
    "--set",
    "max_length=32",
    "--set",
    "logging_steps=1",
]


def processes_mentioning(text: str) -> list[int]:
    """Live processes (this one excepted) whose command line contains ``text``: a launch's own ``--out`` is in
    the command line of the CLI, of ``accelerate launch`` and of every rank."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in command:  # a zombie's command line is empty: only live processes match
            found.append(int(entry.name))
    return found


def kill_processes_mentioning(text: str) -> None:
    for pid in processes_mentioning(text):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
