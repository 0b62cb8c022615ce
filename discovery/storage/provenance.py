"""What reproduces a run, stored beside its results: package versions, the machine, the git commit of the source.

The machine matters because floating-point kernels differ between CPUs and BLAS builds: the same command and
seed give identical scores on one machine and slightly different ones on another (docs/REPRODUCIBILITY.md).
``hardware()`` names what those kernels depend on; ``package_versions()`` carries it into every run's archived
provenance (``Archive.write_provenance`` stores it under ``versions``, as ``hardware.*`` entries), and
``hardware_line()`` is the one-line form for benchmark headers.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from lossforge.evaluate.gpus import describe_gpus

_VERSIONED = ("lossforge", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "openai", "pydantic")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape results, plus ``hardware.<field>`` for ``hardware()``'s fields
    (but ``torch``, there already)."""
    versions = {"python": sys.version.split()[0]}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    versions.update({f"hardware.{field}": value for field, value in hardware().items() if field != "torch"})
    return versions


def hardware() -> dict[str, str]:
    """The machine in a few fields: ``cpu`` (model name), ``machine`` (architecture), ``cores`` (usable by this
    process, of all), ``torch`` (version), ``torch_threads`` (torch's intra-op threads in this process: a run's
    trainings use ``cores // workers`` each), ``cpu_capability`` (the SIMD kernels torch dispatches to) and
    ``blas`` (the BLAS torch was built with, and its version where torch reports it), and ``gpus`` (what
    ``nvidia-smi`` lists: count, name, memory, driver; "none" without it). Imports torch."""
    import torch

    return {**_static_hardware(), "torch_threads": str(torch.get_num_threads())}


def hardware_line() -> str:
    """``hardware()`` on one line, for benchmark headers."""
    info = hardware()
    return (
        f"cpu: {info['cpu']}, {info['machine']}, {info['cores']} cores; torch {info['torch']}, "
        f"{info['torch_threads']} threads, {info['cpu_capability']}, BLAS {info['blas']}; gpus: {info['gpus']}"
    )


@functools.cache
def _static_hardware() -> dict[str, str]:
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine() or "unknown",
        "cores": f"{usable} of {os.cpu_count()}" if usable != os.cpu_count() else str(os.cpu_count()),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": _blas(torch.__config__.show()),
        "gpus": describe_gpus(),
    }


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux) with its family and model numbers (a virtual machine may
    call every generation "AMD EPYC"), else what ``platform`` knows."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine() or "unknown"
    if fields.get("cpu family") and fields.get("model"):
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def _blas(config: str) -> str:
    """``BLAS_INFO`` of torch's build configuration, with MKL's version when it is MKL: "mkl 2024.2"."""
    found = re.search(r"BLAS_INFO=([^,\s]+)", config)
    name = found.group(1) if found else "unknown"
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    return f"{name} {mkl.group(1)}" if name == "mkl" and mkl else name


def git_sha() -> str | None:
    """The lossforge source checkout's commit (with ``-dirty`` if modified), or None outside a checkout."""
    source = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


__all__ = ["git_sha", "hardware", "hardware_line", "package_versions"]
