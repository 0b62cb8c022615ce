"""Every run's provenance names the machine: CPU, cores, torch threads, SIMD capability, BLAS, torch version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.storage.provenance import _blas, hardware, hardware_line, package_versions
from lossforge.evaluate.gpus import describe_gpus

from tests.noisy_scores import TASK, run

FIELDS = {"cpu", "machine", "cores", "torch", "torch_threads", "cpu_capability", "blas", "gpus"}


def test_hardware_describes_this_machine() -> None:
    info = hardware()
    assert set(info) == FIELDS and all(isinstance(v, str) and v for v in info.values())
    assert info["torch"] == torch.__version__ and info["torch_threads"] == str(torch.get_num_threads())
    assert str(os.cpu_count()) in info["cores"]
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    line = hardware_line()
    assert info["cpu"] in line and info["blas"] in line and f"{info['torch_threads']} threads" in line


def test_gpus_are_read_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in nvidia-smi on PATH, printing what the H200 machine's printed for this query (two GPUs here).
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771, 580.159.04'\necho 'NVIDIA H200, 143771, 580.159.04'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert describe_gpus() == "2 x NVIDIA H200 (143771 MiB, driver 580.159.04)"
    fake.write_text("#!/bin/sh\nexit 9\n")  # a driver that fails to answer
    assert describe_gpus() == "none"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert describe_gpus() == "none"


def test_blas_is_read_from_torch_build_configuration() -> None:
    mkl = (
        "  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605\n"
        "  - Build settings: BLAS_INFO=mkl, X=1"
    )
    assert _blas(mkl) == "mkl 2024.2"
    assert _blas("  - Build settings: BLAS_INFO=open, BUILD_TYPE=Release") == "open"
    assert _blas("nothing known") == "unknown"


def test_a_runs_archived_provenance_holds_the_hardware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))
    config = {
        "plan": {},
        "out": str(tmp_path / "run"),
        "seed": 0,
        "search": {"generations": 0, "seed_candidates": ["dpo"], "confirm": {"top_k": 0}},
        "training": {"task": TASK, "steps": 8},
    }
    run(config, tmp_path / "run")
    with Archive.open(tmp_path / "run") as archive:
        versions = archive.get_meta("versions")
    assert {f"hardware.{field}" for field in FIELDS - {"torch"}} <= set(versions)
    assert versions["hardware.cpu"] == hardware()["cpu"] and versions["torch"] == torch.__version__
    assert set(package_versions()) == set(versions)
