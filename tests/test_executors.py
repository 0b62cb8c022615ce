"""Executors: bounded local concurrency, GPU pinning through CUDA_VISIBLE_DEVICES, Ray on a local CPU instance."""

from __future__ import annotations

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

import pytest
import ray
from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.config import build_config
from lossforge.discovery.executors import ExecutorError, LocalExecutor, RayExecutor, make_executor, visible_gpus
from lossforge.discovery.loop import run_discovery

ROOT = Path(__file__).resolve().parents[1]


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
    config = build_config({
        "search": {"generations": 0, "seed_candidates": ["dpo", "hinge"], "confirm": {"top_k": 0}},
        "training": {"task": "tests.tiny_task:TinyTask", "steps": 1, "eval_samples": 4},
        "execution": {"executor": "ray", "workers": 2},
    })  # fmt: skip
    summary = run_discovery(config, tmp_path / "run", progress=False)
    return summary.to_dict(), tmp_path / "run"


def _assert_two_seeds_trained(summary: dict[str, object], run_dir: Path) -> None:
    assert summary["status"] == "finished", summary
    with Archive.open(run_dir) as archive:
        rows = archive.candidates(generation=0)
    assert sorted(row.name for row in rows) == ["dpo", "hinge"]
    assert all(row.status == "ok" and row.score is not None for row in rows), [(r.status, r.reason) for r in rows]


@pytest.fixture
def ray_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ray workers import the tiny task (PYTHONPATH) and write into this test's own cache."""
    assert not ray.is_initialized()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def test_run_discovery_with_the_ray_executor_on_a_local_instance(ray_env: Path) -> None:
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
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
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
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    summary, run_dir = _tiny_ray_run(ray_env)
    _assert_two_seeds_trained(summary, run_dir)
    assert not ray.is_initialized()
