"""Executors: bounded local concurrency, GPU pinning through CUDA_VISIBLE_DEVICES, several workers per GPU within
free memory, Ray on a local CPU instance.

Ray, the archive and the loop are imported inside the tests that use them: the pinned-worker tests spawn processes
that import this module to find their function, and should not pay for those imports.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lossforge.discovery import executors
from lossforge.discovery.executors import ExecutorError, LocalExecutor, RayExecutor, make_executor, place_workers
from lossforge.evaluate.gpus import GpuMemory, parse_gpu_memory, visible_gpus

from tests.paths import ROOT


def test_local_threads_bound_concurrency_to_workers() -> None:
    lock = threading.Lock()
    running = {"now": 0, "max": 0}

    def work(x: int) -> int:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        time.sleep(0.05)
        with lock:
            running["now"] -= 1
        return x * x

    executor = LocalExecutor(2, gpus=[])
    try:
        futures = [executor.submit(work, i) for i in range(8)]
        assert [f.result(timeout=10) for f in futures] == [i * i for i in range(8)]
    finally:
        executor.shutdown()
    assert running["max"] == 2
    assert executor.devices() == ["cpu", "cpu"]


def test_local_gpu_workers_are_pinned_processes() -> None:
    # Pinning is by environment in a spawned worker process, so it can be observed without any GPU.
    executor = LocalExecutor(2, gpus=["0", "1"])
    try:
        devices = {executor.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result(timeout=60) for _ in range(6)}
        pids = {executor.submit(os.getpid).result(timeout=60) for _ in range(6)}
    finally:
        executor.shutdown()
    assert devices <= {"0", "1"} and devices
    assert os.getpid() not in pids and len(pids) <= 2
    assert executor.devices() == ["0", "1"]


def _device_once_all_run(barrier: Any) -> str:
    # Runs in a pinned worker process: returns only once every party of `barrier` is running at the same time.
    barrier.wait()
    return os.environ["CUDA_VISIBLE_DEVICES"]


def test_workers_per_gpu_places_that_many_concurrent_workers_on_each_gpu() -> None:
    executor = LocalExecutor(gpus=["0", "1"], workers_per_gpu=3, gpu_memory={})
    assert executor.workers == 6
    assert executor.devices() == ["0", "1", "0", "1", "0", "1"]  # interleaved: few calls still spread out
    with multiprocessing.get_context("spawn").Manager() as manager:
        # Six parties: a pool running fewer than six calls at once would break the barrier at its timeout.
        barrier = manager.Barrier(6, timeout=120)
        try:
            futures = [executor.submit(_device_once_all_run, barrier) for _ in range(6)]
            devices = sorted(f.result(timeout=180) for f in futures)
        finally:
            executor.shutdown()
    assert devices == ["0", "0", "0", "1", "1", "1"]


NVIDIA_SMI = "0, 81000, 81559\n1, 20480, 81559\n2, [N/A], [N/A]\n"  # index, free MiB, total MiB


def test_nvidia_smi_memory_is_parsed_in_gib() -> None:
    total = 81559 / 1024
    assert parse_gpu_memory(NVIDIA_SMI) == {"0": GpuMemory(81000 / 1024, total), "1": GpuMemory(20.0, total)}
    assert parse_gpu_memory("") == {}


def test_workers_per_gpu_is_reduced_to_what_free_memory_holds(caplog: pytest.LogCaptureFixture) -> None:
    memory = parse_gpu_memory(NVIDIA_SMI)
    with caplog.at_level(logging.WARNING, logger="lossforge.executors"):
        slots = place_workers(["0", "1"], 4, memory, memory_per_worker_gb=8.0)
    assert slots == ["0", "1", "0", "1", "0", "0"]  # GPU 1: 20 GiB free holds two workers of 8 GiB
    [warning] = caplog.messages
    assert "execution.workers_per_gpu=4" in warning and "execution.gpu_memory_per_worker_gb=8" in warning
    assert "GPU 1 runs 2 (20.0 GiB free)" in warning
    caplog.clear()
    assert place_workers(["0"], 1, {"0": GpuMemory(0.5, 80.0)}, 8.0) == ["0"]  # one per GPU: no check, as before
    assert caplog.messages == []


def test_a_gpu_without_room_for_one_worker_is_refused() -> None:
    memory = parse_gpu_memory("0, 81000, 81559\n1, 4096, 81559\n")
    with pytest.raises(ExecutorError, match=r"GPU 1 has 4.0 GiB free: less than one worker's execution.gpu_memory_per"):
        place_workers(["0", "1"], 2, memory, 8.0)
    with pytest.raises(ExecutorError, match="workers_per_gpu must be at least 1, got 0"):
        LocalExecutor(gpus=["0"], workers_per_gpu=0)


def test_make_executor_reads_free_memory_before_placing_several_per_gpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(executors, "query_gpu_memory", lambda: parse_gpu_memory(NVIDIA_SMI))
    with caplog.at_level(logging.WARNING, logger="lossforge.executors"):
        executor = make_executor("local", 3, workers_per_gpu=4, gpu_memory_per_worker_gb=16.0)
    try:  # no call submitted: no process was started
        assert executor.workers == 5 and executor.devices() == ["0", "1", "0", "0", "0"]
    finally:
        executor.shutdown()
    assert "GPU 1 runs 1" in caplog.text
    assert "execution.workers=3 applies to CPU runs; with 2 GPU(s) the pool runs 5 trainings" in caplog.text


def test_workers_per_gpu_without_gpus_leaves_workers_threads(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lossforge.executors"):
        executor = LocalExecutor(2, gpus=[], workers_per_gpu=4)
    executor.shutdown()
    assert executor.devices() == ["cpu", "cpu"]
    assert "execution.workers_per_gpu=4 has no effect without GPUs" in caplog.text


def test_visible_gpus_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_bad_executor_settings_are_clear() -> None:
    with pytest.raises(ExecutorError, match="workers must be at least 1, got 0"):
        LocalExecutor(0)
    with pytest.raises(ExecutorError, match="unknown executor 'slurm'"):
        make_executor("slurm", 1)


def _fails() -> None:
    raise ValueError("boom")


def test_ray_executor_on_local_cpu_instance() -> None:
    executor = RayExecutor(2)
    try:
        assert executor.gpus_per_task == 0.0
        pids = {f.result(timeout=120) for f in [executor.submit(os.getpid) for _ in range(4)]}
        assert os.getpid() not in pids  # ran in Ray workers, not here
        assert executor.submit(divmod, 7, 2).result(timeout=60) == (3, 1)
        with pytest.raises(Exception, match="boom"):
            executor.submit(_fails).result(timeout=60)
    finally:
        executor.shutdown()


@pytest.mark.slow
def test_ray_executor_trains_a_real_candidate() -> None:
    """A real ``train_candidate`` inside a Ray worker (its own isolation fork server); ~45 s on 2 CPUs."""
    from lossforge.candidates import load_builtin
    from lossforge.evaluate.training.launcher import TrainConfig, train_candidate

    config = TrainConfig(task="sentiment", steps=2, eval_samples=8)
    executor = RayExecutor(1)
    try:
        result = executor.submit(train_candidate, load_builtin("dpo").source, config, check=False).result(timeout=600)
    finally:
        executor.shutdown()
    assert result.status == "ok" and result.score is not None
    assert result.timings.get("training", 0.0) > 0


# --------------------------------------------------------------- `--executor ray` through run_discovery


def _tiny_ray_run(tmp_path: Path) -> tuple[dict[str, object], Path]:
    """Generation 0 only, two seeds on the tiny task, trained as Ray tasks; a fresh cache so nothing is reused."""
    from lossforge.discovery.config import build_config
    from lossforge.discovery.loop import run_discovery

    config = build_config(
        {
            "search": {"generations": 0, "seed_candidates": ["dpo", "hinge"], "confirm": {"top_k": 0}},
            "training": {"task": "tests.tiny_task:TinyTask", "steps": 1, "eval_samples": 4},
            "execution": {"executor": "ray", "workers": 2},
        }
    )
    summary = run_discovery(config, tmp_path / "run", progress=False)
    return summary.to_dict(), tmp_path / "run"


def _assert_two_seeds_trained(summary: dict[str, object], run_dir: Path) -> None:
    from lossforge.discovery.storage.archive import Archive

    assert summary["status"] == "finished", summary
    with Archive.open(run_dir) as archive:
        rows = archive.candidates(generation=0)
    assert sorted(row.name for row in rows) == ["dpo", "hinge"]
    assert all(row.status == "ok" and row.score is not None for row in rows), [(r.status, r.reason) for r in rows]


@pytest.fixture
def ray_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ray workers import the tiny task (PYTHONPATH) and write into this test's own cache."""
    import ray

    assert not ray.is_initialized()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def test_run_discovery_with_the_ray_executor_on_a_local_instance(ray_env: Path) -> None:
    import ray

    summary, run_dir = _tiny_ray_run(ray_env)
    _assert_two_seeds_trained(summary, run_dir)
    assert not ray.is_initialized()  # the instance the run started is shut down with it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ray_head(ray_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Ray head started by `ray start --head --block`: this test's own, stopped by its process group (never
    `ray stop`, which would stop every Ray instance of the machine)."""
    port = _free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    # Token authentication (Ray's default) is off for this loopback-only head and the driver connecting to it.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    head = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    lines = iter(head.stdout.readline, "")  # type: ignore[union-attr]
    threading.Thread(target=lambda: output.extend(lines), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while not any("Ray runtime started" in line for line in output):
            assert head.poll() is None and time.monotonic() < deadline, "".join(output)[-3000:]
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"  # Ray resolves the loopback name to the address the head listens on
        # The trainings ran on this head: its session logs name the worker processes that ran them.
        assert list(temp_dir.glob("session_*/logs/worker-*.out"))
    finally:
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_run_discovery_connects_to_the_instance_ray_address_names(
    ray_head: str, ray_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    summary, run_dir = _tiny_ray_run(ray_env)
    _assert_two_seeds_trained(summary, run_dir)
    assert not ray.is_initialized()


def test_planned_concurrency_counts_gpu_slots_and_shares_the_cores() -> None:
    from lossforge.discovery.config import RunConfig
    from lossforge.discovery.executors import planned_concurrency
    from lossforge.discovery.progress import Cost

    assert planned_concurrency(3, 4, gpus=[]) == 3  # CPU: workers
    assert planned_concurrency(3, 4, gpus=["0", "1"]) == 8  # GPUs: workers_per_gpu on each
    config = RunConfig.model_validate({"execution": {"workers": 2, "workers_per_gpu": 4}})
    # The progress estimate divides by what runs at once; this machine's GPUs (none in CI) decide which.
    assert Cost.of(config).workers == planned_concurrency(2, 4)
