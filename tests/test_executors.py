"""Executors: bounded local concurrency, GPU pinning through CUDA_VISIBLE_DEVICES, Ray on a local CPU instance."""

from __future__ import annotations

import os
import threading
import time

import pytest
from lossforge.discovery.executors import ExecutorError, LocalExecutor, RayExecutor, make_executor, visible_gpus


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
    pytest.importorskip("ray")
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
    pytest.importorskip("ray")
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
