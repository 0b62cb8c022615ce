"""The ``accelerate launch`` command line of a retrain, and running it.

Which launcher accelerate uses:

- an accelerate config (``--accelerate-config FILE``, or the recipe's own where GPUs are visible): as the
  file says -- DDP, FSDP or DeepSpeed; ``--num_processes`` overrides its count;
- CUDA GPUs, no config: ``--multi_gpu`` DDP (NCCL) for N > 1 processes, a single process otherwise;
- no GPU: CPU DDP over gloo. accelerate's ``--cpu`` flag starts one process only (its simple launcher), so
  N > 1 CPU processes go through the ``--multi_gpu`` launcher (``torch.distributed.run``) with
  ``ACCELERATE_USE_CPU=true``, which makes every rank's ``Accelerator`` a CPU one with the gloo backend;
  each rank gets ``cores // N`` threads.

The command is ``python -m accelerate.commands.launch`` with this interpreter, so the launch uses the
installation that runs lossforge whatever ``PATH`` holds.

Running it (``run_launch``): the ranks execute the candidate outside the sandbox, so the launch gets
``candidate_environment()`` (no API keys or tokens), never this process's environment; its output, every
rank's stdout and stderr, is appended to ``OUT/train.log`` by the operating system (line by line, so it
survives this process), while the console shows the ranks' own ``[rank R/N]`` lines and a progress line now
and then; and whatever way the call ends (exit, ``--timeout``, Ctrl-C, an exception) every process of the
launch is stopped, ranks included although each leads a session of its own
(:mod:`~lossforge.evaluate.retrain.processes`).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossforge.evaluate.retrain.lockdown import LAUNCH_TAG_VAR, SUPERVISOR_VAR, process_start_time
from lossforge.evaluate.retrain.processes import GRACE_S, stop_launch

ENTRY_MODULE = "lossforge.evaluate.retrain.entry"


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    env: dict[str, str]  # added to the reduced environment (``launch_environment``)
    description: str  # one sentence for the log: how many processes, which backend, which config


def free_port() -> int:
    """A TCP port free on loopback now, for the rendezvous (two launches at once must not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def plan_launch(
    entry_args: Sequence[str], *, num_processes: int, gpus: int, cores: int, accelerate_config: Path | None
) -> LaunchPlan:
    """The ``accelerate launch`` argv and environment for ``num_processes`` ranks on this machine."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    # Unbuffered: a rank's last lines reach train.log even when it is killed.
    env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    if num_processes > 1:
        argv += ["--main_process_port", str(free_port())]
    if accelerate_config is not None:
        argv += ["--config_file", str(accelerate_config)]
        description = f"{num_processes} process(es) as {accelerate_config} says"
    elif gpus:
        argv += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        argv += ["--multi_gpu"] if num_processes > 1 else []
        description = f"{num_processes} GPU process(es)" + (", DDP over NCCL" if num_processes > 1 else "")
    else:
        threads = max(1, cores // num_processes)
        argv += [
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--num_cpu_threads_per_process",
            str(threads),
        ]
        if num_processes > 1:
            # --cpu would start one process; the multi-process launcher with ACCELERATE_USE_CPU is CPU DDP.
            argv += ["--multi_gpu"]
            env["ACCELERATE_USE_CPU"] = "true"
            description = f"{num_processes} CPU processes, DDP over gloo, {threads} thread(s) each"
        else:
            argv += ["--cpu"]
            description = f"1 CPU process, {threads} thread(s)"
    argv += ["--module", ENTRY_MODULE, *entry_args]
    return LaunchPlan(argv, env, description)


@dataclass(frozen=True)
class LaunchOutcome:
    """How a launch ended: its exit status (None when it was killed for the timeout), in how long."""

    returncode: int | None
    timed_out: bool
    seconds: float
    killed: list[int] = field(default_factory=list)  # pids that needed SIGKILL when it was stopped
    errors: list[str] = field(default_factory=list)  # the distinct exception lines of its output, last first


def launch_environment(plan: LaunchPlan, token: str) -> dict[str, str]:
    """What ``accelerate launch`` and its ranks get: ``candidate_environment()`` (no secrets), the plan's
    variables, the launch's tag, and the supervisor the ranks watch (this process). Never ``os.environ``."""
    from lossforge.evaluate.isolation.environment import candidate_environment

    supervisor = f"{os.getpid()}:{process_start_time(os.getpid())}"
    return {**candidate_environment(), **plan.env, LAUNCH_TAG_VAR: token, SUPERVISOR_VAR: supervisor}


def run_launch(
    plan: LaunchPlan, *, log_path: Path, timeout_s: float | None = None, grace_s: float = GRACE_S
) -> LaunchOutcome:
    """Run the launch with every rank's output appended to ``log_path``; the console gets a short progress.

    The launch runs in its own session with the reduced environment (``launch_environment``). Whatever way
    this call ends -- the launch exits, ``timeout_s`` passes, Ctrl-C (``KeyboardInterrupt``) or another
    exception -- every process of the launch is stopped (:func:`~lossforge.evaluate.retrain.processes.stop_launch`)
    before it returns or raises.
    """
    token = secrets.token_hex(8)
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8", buffering=1) as log:
        log.write(f"=== lossforge retrain: {plan.description}, {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
        offset = log.tell()
        process = subprocess.Popen(
            plan.argv,
            env=launch_environment(plan, token),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    follower = ConsoleFollower(log_path, offset)
    follower.start()
    timed_out, killed = False, []
    try:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        killed = stop_launch(process, token, grace_s=grace_s)
        follower.stop()
    returncode = None if timed_out else process.returncode
    return LaunchOutcome(returncode, timed_out, time.monotonic() - started, killed, follower.errors[::-1])


def describe_protections(static_policy: bool, timeout_s: float, rank: dict[str, str] | None) -> dict[str, Any]:
    """Which protections a retrain ran under, for ``metrics.json``, the model card and the command's output.
    ``rank``: what rank 0 reported applying before the loss first ran (``train_log.json``), or None."""
    return {
        "static_policy": "on" if static_policy else "off (--no-static-policy)",
        "sandbox_check": "on",
        "environment": "reduced: candidate_environment(), no credential-named variable, plus the launch's own",
        "process_stop": f"every process of the launch, ranks included, on exit, Ctrl-C, error or timeout "
        f"(SIGTERM, SIGKILL after {GRACE_S:g} s)",
        "timeout_s": timeout_s,
        "rank": rank or {"lockdown": "not reported: the loss never ran"},
        "not_applied": "network namespace, seccomp filter, RLIMIT_AS/NPROC/FSIZE: distributed training needs "
        "the sockets, devices and memory they refuse",
    }


class ConsoleFollower(threading.Thread):
    """Follows ``train.log`` from ``offset`` and prints the ranks' own lines (``[rank R/N] ...``) and at most
    one progress-bar update per ``progress_every_s`` seconds on stderr; everything else stays in the log.
    Control characters are replaced (a candidate's output must not drive the terminal), and exception lines
    (``SomeError: ...``) are kept in ``errors`` for the error message."""

    def __init__(self, path: Path, offset: int, progress_every_s: float = 30.0) -> None:
        super().__init__(name="train-log-follower", daemon=True)
        self.path, self.offset, self.progress_every_s = path, offset, progress_every_s
        self._done = threading.Event()
        self._last_progress = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            pending = b""
            while True:
                finished = self._done.is_set()
                pending += log.read()
                *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
                for line in lines:
                    self._show(line.decode("utf-8", "replace"))
                if finished:
                    self._show(pending.decode("utf-8", "replace"))
                    return
                self._done.wait(0.25)

    def _show(self, line: str) -> None:
        line = "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in line)
        if not line.strip():
            return
        if _EXCEPTION.match(line) and line not in self.errors and "ChildFailedError" not in line:
            self.errors = [*self.errors[-4:], line]
        now = time.monotonic()
        if line.startswith("[rank "):
            sys.stderr.write(line + "\n")
        elif (bar := _PROGRESS.match(line)) and now - self._last_progress >= self.progress_every_s:
            self._last_progress = now
            sys.stderr.write(bar.group(0).strip() + "\n")  # the bar alone: a warning may follow it on its line

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt): ")  # a traceback's last line
# The trainer's tqdm bar, "  50%|#####     | 1/2 [00:03<00:03, 3.1s/it]"; bars with a description in front
# ("Loading weights: 100%|...", "Tokenizing train dataset: ...") are the libraries' own and stay in the log.
_PROGRESS = re.compile(r"\s*\d+%\|[^|]*\|\s*\d+/\d+ \[[^\]]*\]")


__all__ = [
    "ENTRY_MODULE",
    "ConsoleFollower",
    "LaunchOutcome",
    "LaunchPlan",
    "describe_protections",
    "free_port",
    "launch_environment",
    "plan_launch",
    "run_launch",
]
