"""Where training runs: a local pool of N workers, or Ray for clusters.

The loop hands executors ``train_candidate`` calls, which already isolate the candidate's code in a protected
worker process; an executor only decides how many run at once and on which device.

- ``LocalExecutor``: N workers. Without GPUs they are threads (the isolation is in ``train_candidate``'s own
  worker process). With GPUs, each worker is a long-lived process started with ``CUDA_VISIBLE_DEVICES`` set to
  its GPU before anything imports CUDA, so one worker owns one GPU and a call never sees the others.
- ``RayExecutor``: each call is a Ray task (``num_gpus`` per task where GPUs exist; Ray then sets
  ``CUDA_VISIBLE_DEVICES`` itself). Ray is an optional extra: ``pip install 'lossforge[ray]'``.

Both return ``concurrent.futures.Future`` objects, so the loop does not care which one it has.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class ExecutorError(RuntimeError):
    """An executor that cannot start (Ray missing, bad address...): one clear message for the user."""


class Executor(Protocol):
    name: str
    workers: int

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]: ...

    def shutdown(self, wait: bool = True) -> None: ...


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else what ``nvidia-smi`` lists.

    ``nvidia-smi`` rather than ``torch.cuda``: initialising CUDA in the parent would be inherited badly by
    the workers and costs seconds; an empty list means "CPU only".
    """
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d.strip() for d in declared.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _pin_to_device(device: str) -> None:
    # Runs first in a fresh (spawned) worker process, before torch or CUDA are imported there.
    os.environ["CUDA_VISIBLE_DEVICES"] = device


class LocalExecutor:
    """A pool of ``workers`` concurrent calls; one per GPU (pinned) when ``gpus`` is non-empty.

    ``gpus=None`` detects them (``visible_gpus()``); ``gpus=[]`` forces CPU threads. With GPUs and
    ``workers`` larger than the GPU count, GPUs are shared round-robin (worker i gets ``gpus[i % len]``).
    """

    name = "local"

    def __init__(self, workers: int = 1, *, gpus: list[str] | None = None) -> None:
        if workers < 1:
            raise ExecutorError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        # The dispatcher threads bound concurrency to `workers`; with GPUs each one forwards to its own
        # single-process pool, so a device is never shared between two running calls of one slot.
        self._dispatch = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lossforge-worker")
        self._slots: list[ProcessPoolExecutor] = []
        self._free: queue.Queue[int] = queue.Queue()
        if self.gpus:
            context = multiprocessing.get_context("spawn")  # fork after CUDA/threads is unsafe
            for i in range(workers):
                device = self.gpus[i % len(self.gpus)]
                pool = ProcessPoolExecutor(1, mp_context=context, initializer=_pin_to_device, initargs=(device,))
                self._slots.append(pool)
                self._free.put(i)

    def devices(self) -> list[str]:
        """The device of each worker ("cpu" for thread workers)."""
        if not self.gpus:
            return ["cpu"] * self.workers
        return [self.gpus[i % len(self.gpus)] for i in range(self.workers)]

    def _run_pinned(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        slot = self._free.get()
        try:
            return self._slots[slot].submit(fn, *args, **kwargs).result()
        finally:
            self._free.put(slot)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._slots:
            return self._dispatch.submit(self._run_pinned, fn, args, kwargs)
        return self._dispatch.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:
        self._dispatch.shutdown(wait=wait, cancel_futures=not wait)
        for pool in self._slots:
            pool.shutdown(wait=wait, cancel_futures=not wait)


class RayExecutor:
    """Each call is a Ray task. Connects to ``address`` (or ``$RAY_ADDRESS``) or starts a local Ray instance.

    A local instance gets ``num_cpus=workers`` so Ray itself bounds concurrency; on a cluster, the
    ``max_in_flight`` limit is the cluster's capacity as Ray schedules it.
    """

    name = "ray"

    def __init__(
        self,
        workers: int = 1,
        *,
        address: str | None = None,
        gpus_per_task: float | None = None,
        cpus_per_task: float = 1.0,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ExecutorError(
                "the ray executor needs Ray, which is not installed: pip install 'lossforge[ray]' "
                "(or use --executor local)"
            ) from exc
        self._ray = ray
        self.workers = workers
        self._owns_ray = False
        # `ray job submit` and cluster set-ups export RAY_ADDRESS; connect there rather than start a local Ray.
        address = address or os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(
                        num_cpus=max(1, int(workers * cpus_per_task)),
                        include_dashboard=False,
                        log_to_driver=False,
                    )  # local workers inherit this process's environment ($LOSSFORGE_CACHE included)
            except Exception as exc:  # Ray raises many types here; the user needs one sentence
                where = address or "a local instance"
                raise ExecutorError(f"could not start Ray ({where}): {exc}") from exc
            self._owns_ray = True
        if gpus_per_task is None:
            gpus_per_task = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        self.gpus_per_task = gpus_per_task
        self._remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0)(_call)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        ref = self._remote.remote(fn, args, kwargs)
        future: Future[T] = ref.future()
        return future

    def shutdown(self, wait: bool = True) -> None:
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()


def _call(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    return fn(*args, **kwargs)


def make_executor(kind: str, workers: int, *, address: str | None = None) -> Executor:
    """The executor a config names: ``local`` or ``ray``."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address=address)
    raise ExecutorError(f"unknown executor {kind!r}; expected 'local' or 'ray'")
