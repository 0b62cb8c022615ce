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
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ENTRY_MODULE = "lossforge.evaluate.retrain.entry"


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    env: dict[str, str]  # added to the parent's environment
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
    env = {"TOKENIZERS_PARALLELISM": "false"}
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
        argv += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                 "--num_cpu_threads_per_process", str(threads)]  # fmt: skip
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


def run_launch(plan: LaunchPlan, *, log_path: Path | None = None) -> int:
    """Run the launch; its output goes to this process's stderr (and to ``log_path``). The exit status.

    The launch runs in its own session. When the launcher exits, anything left in that session (a rank's stray
    helper process) is killed: it would hold the output pipe open and keep this call waiting forever.
    """
    env = {**os.environ, **plan.env}
    log = log_path.open("w", encoding="utf-8") if log_path is not None else None
    process = subprocess.Popen(plan.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1, start_new_session=True)  # fmt: skip
    copier = threading.Thread(target=_copy_output, args=(process.stdout, log), daemon=True)
    copier.start()
    try:
        return process.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # none left: the usual case
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        copier.join(timeout=30)
        if log is not None:
            log.close()


def _copy_output(stream: IO[str] | None, log: IO[str] | None) -> None:
    for line in stream or ():
        sys.stderr.write(line)
        if log is not None:
            log.write(line)


__all__ = ["ENTRY_MODULE", "LaunchPlan", "free_port", "plan_launch", "run_launch"]
