"""The GPUs of this machine as ``nvidia-smi`` lists them: which this process may use, their memory, a description.

``nvidia-smi`` rather than ``torch.cuda``: initialising CUDA in a parent process would be inherited badly by
the workers it forks and costs seconds. Everything that asks which GPUs exist asks here: the discovery's
executors, a retrain's launch and the provenance a run stores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NamedTuple


def nvidia_smi(query: str) -> str | None:
    """``nvidia-smi --query-gpu=QUERY`` as CSV without header or units; None where it is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    command = ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else what ``nvidia-smi`` lists.

    ``nvidia-smi`` rather than ``torch.cuda``: initialising CUDA in the parent would be inherited badly by
    the workers and costs seconds; an empty list means "CPU only".
    """
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d.strip() for d in declared.split(",") if d.strip() and d.strip() != "-1"]
    out = nvidia_smi("index") or ""
    return [line.strip() for line in out.splitlines() if line.strip()]


class GpuMemory(NamedTuple):
    """Memory of one GPU in GiB, as ``nvidia-smi`` reports it (MiB / 1024)."""

    free_gb: float
    total_gb: float


def parse_gpu_memory(text: str) -> dict[str, GpuMemory]:
    """GPU index -> memory, from ``nvidia-smi --query-gpu=index,memory.free,memory.total --format=csv,noheader,
    nounits`` output (``"0, 80213, 81559"`` per line, MiB). Lines it cannot read ("[N/A]" on MIG) are skipped."""
    memory: dict[str, GpuMemory] = {}
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 3:
            continue
        try:
            free_mib, total_mib = float(fields[1]), float(fields[2])
        except ValueError:
            continue
        memory[fields[0]] = GpuMemory(free_mib / 1024, total_mib / 1024)
    return memory


def query_gpu_memory() -> dict[str, GpuMemory]:
    """Free and total memory of every GPU ``nvidia-smi`` lists (by physical index); empty where it cannot tell."""
    return parse_gpu_memory(nvidia_smi("index,memory.free,memory.total") or "")


def describe_gpus() -> str:
    """The GPUs as "2 x NVIDIA H200 (143771 MiB, driver 580.159.04)", one group per kind; "none" where none is
    listed."""
    out = nvidia_smi("name,memory.total,driver_version") or ""
    rows = [tuple(field.strip() for field in line.split(",")) for line in out.splitlines() if line.strip()]
    if not rows:
        return "none"
    kinds = {row: rows.count(row) for row in rows}
    return "; ".join(f"{n} x {name} ({memory} MiB, driver {driver})" for (name, memory, driver), n in kinds.items())


__all__ = ["GpuMemory", "describe_gpus", "nvidia_smi", "parse_gpu_memory", "query_gpu_memory", "visible_gpus"]
