"""Where training runs: a local pool of workers, or Ray for clusters.

The loop hands executors ``train_candidate`` calls, which already isolate the candidate's code in a protected
worker process; an executor only decides how many run at once and on which device.

- ``LocalExecutor``: without GPUs, ``workers`` threads (the isolation is in ``train_candidate``'s own worker
  process). With GPUs, ``workers_per_gpu`` long-lived processes per visible GPU, each started with
  ``CUDA_VISIBLE_DEVICES`` set to its GPU before anything imports CUDA, so a call never sees the other GPUs;
  ``workers`` does not apply there (see ``LocalExecutor``).
- ``RayExecutor``: each call is a Ray task (``1 / workers_per_gpu`` GPUs per task where GPUs exist; Ray then
  sets ``CUDA_VISIBLE_DEVICES`` itself). Ray is an optional extra: ``pip install 'lossforge[ray]'``.

Both return ``concurrent.futures.Future`` objects, so the loop does not care which one it has.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from lossforge.evaluate.gpus import GpuMemory, query_gpu_memory, visible_gpus

T = TypeVar("T")
log = logging.getLogger("lossforge.executors")

# Default of ``execution.gpu_memory_per_worker_gb``: about a ~1B-parameter LoRA training (benchmarks/bench_train.py
# measured an 8.6 GiB peak for its 1b model, bf16 autocast, batch 16, length 64); tiny tasks need far less.
GPU_MEMORY_PER_WORKER_GB = 8.0
# Concurrent trainings on CPU by default: two trainings of one thread each beat one of two threads by 4-20x on
# 2 shared cores (OpenMP threads spin-wait whenever another job holds a core; benchmarks/RESULTS.md, issue 21).
DEFAULT_CPU_WORKERS = 2


class ExecutorError(RuntimeError):
    """An executor that cannot start (Ray missing, bad address...): one clear message for the user."""


class Executor(Protocol):
    name: str
    workers: int

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]: ...

    def shutdown(self, wait: bool = True) -> None: ...


def planned_concurrency(workers: int, workers_per_gpu: int, gpus: Sequence[str] | None = None) -> int:
    """Trainings the local executor runs at once: ``workers`` without GPUs, ``len(gpus) * workers_per_gpu`` with.

    ``gpus=None`` detects them. The memory check may place fewer on a full GPU; this is the plan, for the
    progress estimate and for sharing the CPU cores between trainings.
    """
    gpus = visible_gpus() if gpus is None else gpus
    return len(gpus) * workers_per_gpu if gpus else workers


def place_workers(
    gpus: list[str], workers_per_gpu: int, memory: Mapping[str, GpuMemory], memory_per_worker_gb: float
) -> list[str]:
    """The GPU of each worker slot: ``workers_per_gpu`` per GPU, interleaved (``0, 1, 0, 1...``).

    With ``workers_per_gpu > 1``, a GPU whose free memory holds fewer workers of ``memory_per_worker_gb`` gets
    as many as fit (one warning for all GPUs); one where not even one fits is refused (``ExecutorError``): it
    would turn the run's trainings into out-of-memory failures. A GPU ``memory`` does not list (no
    ``nvidia-smi``, ids that are not indices) gets ``workers_per_gpu`` unchecked. With one worker per GPU there
    is no check, as before the option existed: a GPU's single training runs with whatever memory it has.
    """
    if workers_per_gpu < 1:
        raise ExecutorError(f"execution.workers_per_gpu must be at least 1, got {workers_per_gpu}")
    if memory_per_worker_gb <= 0:
        raise ExecutorError(f"execution.gpu_memory_per_worker_gb must be positive, got {memory_per_worker_gb}")
    counts = {gpu: workers_per_gpu for gpu in gpus}
    if workers_per_gpu > 1:
        reduced, full, unknown = [], [], [gpu for gpu in gpus if gpu not in memory]
        for gpu in gpus:
            if gpu not in memory:
                continue
            fits = int(memory[gpu].free_gb // memory_per_worker_gb)
            if fits == 0:
                full.append(f"GPU {gpu} has {memory[gpu].free_gb:.1f} GiB free")
            elif fits < workers_per_gpu:
                counts[gpu] = fits
                reduced.append(f"GPU {gpu} runs {fits} ({memory[gpu].free_gb:.1f} GiB free)")
        if full:
            raise ExecutorError(
                f"{'; '.join(full)}: less than one worker's execution.gpu_memory_per_worker_gb="
                f"{memory_per_worker_gb:g} GiB, so execution.workers_per_gpu={workers_per_gpu} cannot be placed; "
                "free that GPU or hide it (CUDA_VISIBLE_DEVICES), lower gpu_memory_per_worker_gb if a training "
                "needs less, or use workers_per_gpu 1 (no memory check)"
            )
        if reduced:
            log.warning(
                "execution.workers_per_gpu=%d does not fit in free GPU memory at execution.gpu_memory_per_worker_gb"
                "=%g GiB per worker: %s; lower gpu_memory_per_worker_gb if a training needs less",
                workers_per_gpu,
                memory_per_worker_gb,
                ", ".join(reduced),
            )
        if unknown:
            log.warning(
                "free memory of GPU %s unknown (nvidia-smi cannot run or lists no such index): %d workers each, "
                "unchecked",
                ", ".join(unknown),
                workers_per_gpu,
            )
    # Interleaved, so that a pool running fewer calls than it has slots still spreads them over the GPUs.
    return [gpu for rank in range(max(counts.values(), default=0)) for gpu in gpus if counts[gpu] > rank]


def _pin_to_device(device: str) -> None:
    # Runs first in a fresh (spawned) worker process, before torch or CUDA are imported there.
    os.environ["CUDA_VISIBLE_DEVICES"] = device


class LocalExecutor:
    """Concurrent calls on this machine: ``workers`` threads on CPU, ``workers_per_gpu`` pinned processes per GPU.

    The rule: without GPUs, ``workers`` calls run at once. With GPUs, ``len(gpus) * workers_per_gpu`` calls run
    at once, each in a process that sees only its GPU, and ``workers`` does not apply (a value other than 1 or
    that count is named in a warning): one config then runs on a laptop and on a GPU node alike. To use fewer GPUs, hide
    some with ``CUDA_VISIBLE_DEVICES``. Before placing more than one worker per GPU, free memory is read from
    ``nvidia-smi`` (``gpu_memory``: the same mapping, given, for tests) and each GPU gets only as many workers
    of ``gpu_memory_per_worker_gb`` as fit (``place_workers``). A call goes to the least busy GPU.

    ``gpus=None`` detects them (``visible_gpus()``); ``gpus=[]`` forces CPU threads.
    """

    name = "local"

    def __init__(
        self,
        workers: int = 1,
        *,
        gpus: list[str] | None = None,
        workers_per_gpu: int = 1,
        gpu_memory_per_worker_gb: float = GPU_MEMORY_PER_WORKER_GB,
        gpu_memory: Mapping[str, GpuMemory] | None = None,
    ) -> None:
        if workers < 1:
            raise ExecutorError(f"workers must be at least 1, got {workers}")
        if workers_per_gpu < 1:
            raise ExecutorError(f"execution.workers_per_gpu must be at least 1, got {workers_per_gpu}")
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        self._slot_devices: list[str] = []
        self._slots: list[ProcessPoolExecutor] = []
        if self.gpus:
            if gpu_memory is None and workers_per_gpu > 1:
                gpu_memory = query_gpu_memory()
            self._slot_devices = place_workers(self.gpus, workers_per_gpu, gpu_memory or {}, gpu_memory_per_worker_gb)
            if workers not in (1, DEFAULT_CPU_WORKERS, len(self._slot_devices)):  # the defaults: nothing asked for
                log.warning(
                    "execution.workers=%d applies to CPU runs; with %d GPU(s) the pool runs %d trainings "
                    "(execution.workers_per_gpu=%d per GPU, --workers-per-gpu)",
                    workers,
                    len(self.gpus),
                    len(self._slot_devices),
                    workers_per_gpu,
                )
            workers = len(self._slot_devices)
            context = multiprocessing.get_context("spawn")  # fork after CUDA/threads is unsafe
            for device in self._slot_devices:
                self._slots.append(
                    ProcessPoolExecutor(1, mp_context=context, initializer=_pin_to_device, initargs=(device,))
                )
        elif workers_per_gpu != 1:
            log.warning(
                "execution.workers_per_gpu=%d has no effect without GPUs; execution.workers sets CPU concurrency (%d)",
                workers_per_gpu,
                workers,
            )
        self.workers = workers
        # The dispatcher threads bound concurrency to `workers`; with GPUs each one forwards to an idle slot (a
        # single-process pool), so a slot never runs two calls at once.
        self._dispatch = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lossforge-worker")
        self._idle = list(range(len(self._slots)))
        self._running: Counter[str] = Counter()
        self._changed = threading.Condition()

    def devices(self) -> list[str]:
        """The device of each worker ("cpu" for thread workers)."""
        return list(self._slot_devices) if self._slots else ["cpu"] * self.workers

    def _acquire(self) -> int:
        with self._changed:
            # As many dispatcher threads as slots, so an idle slot exists; waiting only guards that invariant.
            self._changed.wait_for(lambda: bool(self._idle))
            slot = min(self._idle, key=lambda i: (self._running[self._slot_devices[i]], i))
            self._idle.remove(slot)
            self._running[self._slot_devices[slot]] += 1
            return slot

    def _release(self, slot: int) -> None:
        with self._changed:
            self._running[self._slot_devices[slot]] -= 1
            self._idle.append(slot)
            self._changed.notify()

    def _run_pinned(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        slot = self._acquire()
        try:
            return self._slots[slot].submit(fn, *args, **kwargs).result()
        finally:
            self._release(slot)

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
    ``max_in_flight`` limit is the cluster's capacity as Ray schedules it. Where the cluster has GPUs, a task
    asks for ``1 / workers_per_gpu`` of one (``gpus_per_task`` overrides it), so Ray packs that many per GPU;
    Ray does not know how much memory a training needs, so nothing checks that they fit.
    """

    name = "ray"

    def __init__(
        self,
        workers: int = 1,
        *,
        address: str | None = None,
        gpus_per_task: float | None = None,
        cpus_per_task: float = 1.0,
        workers_per_gpu: int = 1,
    ) -> None:
        if workers_per_gpu < 1:
            raise ExecutorError(f"execution.workers_per_gpu must be at least 1, got {workers_per_gpu}")
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
            gpus_per_task = 1.0 / workers_per_gpu if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
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


def make_executor(
    kind: str,
    workers: int,
    *,
    address: str | None = None,
    workers_per_gpu: int = 1,
    gpu_memory_per_worker_gb: float = GPU_MEMORY_PER_WORKER_GB,
) -> Executor:
    """The executor a config names: ``local`` or ``ray`` (``execution.*``; the rule is ``LocalExecutor``'s)."""
    if kind == "local":
        return LocalExecutor(
            workers, workers_per_gpu=workers_per_gpu, gpu_memory_per_worker_gb=gpu_memory_per_worker_gb
        )
    if kind == "ray":
        return RayExecutor(workers, address=address, workers_per_gpu=workers_per_gpu)
    raise ExecutorError(f"unknown executor {kind!r}; expected 'local' or 'ray'")
