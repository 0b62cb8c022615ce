"""The lock-down of a retrain's rank: what still holds where the sandbox cannot (every part optional, reported).

A retrain runs the candidate outside the sandbox: distributed training needs sockets (gloo, NCCL), devices,
shared memory and native libraries, so the sandbox's network namespace, seccomp filter and ``RLIMIT_AS``
would break it. What does not break it is applied in each rank, after its set-up (model, data, optimizer,
trackers, the first forward pass) and before the candidate's code first runs -- :class:`DeferredLoss`
compiles the candidate on its first call, right after :func:`apply_rank_protections`:

- ``rlimit_core``: ``RLIMIT_CORE`` = 0 (a crash leaves no core file holding the process's memory);
- ``audit_hook``: a Python audit hook that refuses new processes (``subprocess``, ``os.system``, ``exec``,
  ``fork``, ``posix_spawn``), opening files for writing outside ``--out`` and the cache directories
  (``~/.cache`` or ``$XDG_CACHE_HOME``, ``$HF_HOME``, ``$TRITON_CACHE_DIR``, ``$TORCHINDUCTOR_CACHE_DIR``;
  never ``$LOSSFORGE_CACHE`` or ``$LOSSFORGE_HOME``, which hold scoring inputs and loss libraries) and
  removing, renaming or creating files and directories outside them too, reading another process's
  ``/proc/PID`` (the ``lossforge retrain`` process's
  environment holds the user's keys), and reading credential files (``~/.netrc``, ``~/.ssh``, the Hugging
  Face token...), which fail as if absent so that hub clients carry on anonymously. It is interpreter-level
  only: ``ctypes`` stays usable (bitsandbytes' optimizers call their kernels through it), so native code can
  get around it; the static policy, which refuses every import but torch and math, is the layer that keeps
  a loss away from ``ctypes``.

Not applied, because distributed training needs them: the network namespace, seccomp, ``RLIMIT_AS``,
``RLIMIT_NPROC`` and ``RLIMIT_FSIZE``. :func:`watch_supervisor` is the rank's side of the launcher's
guarantee that no rank outlives the command: the rank kills itself when ``lossforge retrain`` is gone.
"""

from __future__ import annotations

import ast
import errno
import getpass
import inspect
import logging
import os
import resource
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lossforge.candidates import parse_source
from lossforge.evaluate.isolation.lockdown import PROCESS_EVENTS

log = logging.getLogger("lossforge.retrain")

SUPERVISOR_VAR = "LOSSFORGE_RETRAIN_SUPERVISOR"  # "PID:START_TIME" of the lossforge retrain process
LAUNCH_TAG_VAR = "LOSSFORGE_RETRAIN_LAUNCH"  # marks every process of one launch, whatever session it leads
PROTECTIONS = ("rlimit_core", "audit_hook", "supervisor_watch")
# Audit events that change a file, with the positions of their path arguments.
_CHANGE_EVENTS: dict[str, tuple[int, ...]] = {
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.truncate": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.link": (0, 1),
    "os.symlink": (1,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
    "shutil.move": (0, 1),
    "shutil.copyfile": (1,),
}
_WRITE_BITS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)
_CREDENTIAL_FILES = (
    ".netrc",
    ".git-credentials",
    ".ssh",
    ".aws",
    ".azure",
    ".docker/config.json",
    ".config/gcloud",
    ".huggingface/token",
    ".cache/huggingface/token",
    ".kaggle",
)


def apply_rank_protections(out: Path) -> dict[str, str]:
    """Lock this rank down; returns protection -> ``"on"`` or ``"unavailable: <reason>"``. Irreversible."""
    report = {"rlimit_core": _guard(lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))}
    hook = WriteAndProcessHook(writable_roots(out), hidden_paths(), denied_roots())
    report["audit_hook"] = _guard(lambda: sys.addaudithook(hook))
    return report


def _guard(action: Callable[[], object]) -> str:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - each protection is optional; its failure is reported, not raised
        return f"unavailable: {type(exc).__name__}: {exc}"
    return "on"


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def writable_roots(out: Path) -> tuple[Path, ...]:
    """``out`` and the cache directories a rank may still write once locked down."""
    home = _home()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or Path(tempfile.gettempdir()) / f"torchinductor_{_user()}"
    roots = [
        out,
        cache,
        os.environ.get("HF_HOME"),
        os.environ.get("HF_DATASETS_CACHE"),
        os.environ.get("TRITON_CACHE_DIR") or home / ".triton",
        inductor,
    ]
    return tuple(_real(root) for root in roots if root)


def denied_roots() -> tuple[Path, ...]:
    """Refused for writing even inside a writable root: lossforge's cache (the inputs of scores) and libraries."""
    home = _home()
    cache = os.environ.get("LOSSFORGE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "lossforge"
    return (_real(cache), _real(os.environ.get("LOSSFORGE_HOME") or home / ".lossforge"))


def hidden_paths() -> tuple[Path, ...]:
    """Credential files a rank may not read once locked down."""
    home = _home()
    paths = [home / name for name in _CREDENTIAL_FILES]
    hf_home = Path(os.environ.get("HF_HOME") or home / ".cache" / "huggingface")
    paths += [hf_home / "token", hf_home / "stored_tokens"]
    if os.environ.get("HF_TOKEN_PATH"):
        paths.append(Path(os.environ["HF_TOKEN_PATH"]))
    return tuple(_real(path) for path in paths)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


class WriteAndProcessHook:
    """The audit hook of a locked-down rank (see the module docstring)."""

    def __init__(self, writable: tuple[Path, ...], hidden: tuple[Path, ...], denied: tuple[Path, ...]) -> None:
        self.writable, self.hidden, self.denied = writable, hidden, denied
        self.pid = os.getpid()

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            self._check_open(args)
        elif event in PROCESS_EVENTS:
            raise PermissionError(f"lossforge retrain refuses {event} in a training process once the loss runs")
        elif event in _CHANGE_EVENTS:
            for index in _CHANGE_EVENTS[event]:
                if index < len(args):
                    self._check_write(args[index], event)

    def _check_open(self, args: tuple[Any, ...]) -> None:
        target, mode, flags = (args + (None, None, 0))[:3]
        if target is None or isinstance(target, int):  # an already open descriptor
            return
        path = _real(os.fsdecode(target))
        if self._other_process(path):
            raise PermissionError(f"lossforge retrain refuses reading {path}: another process's /proc entry")
        if _within(path, self.hidden):
            raise FileNotFoundError(errno.ENOENT, "credential files are hidden from training processes", str(path))
        writing = isinstance(mode, str) and any(c in mode for c in "wax+")
        if writing or (isinstance(flags, int) and any(flags & bit for bit in _WRITE_BITS)):
            self._check_write(target, "open for writing")

    def _check_write(self, target: Any, what: str) -> None:
        if target is None or isinstance(target, int):
            return
        path = _real(os.fsdecode(target))
        if _within(path, self.denied) or not _within(path, self.writable):
            raise PermissionError(
                f"lossforge retrain refuses {what} of {path}: a training process writes only under --out and the "
                "cache directories (never lossforge's own cache or loss library)"
            )

    def _other_process(self, path: Path) -> bool:
        parts = path.parts
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and int(parts[2]) != self.pid


class DeferredLoss:
    """The candidate's ``loss``, compiled on its first call, right after ``lock_down()``: none of the
    candidate's code (module level included) runs before the rank is locked down, and everything the set-up
    needs (trackers, data loader workers, the optimizer, the first forward pass) has already started.

    Its ``__signature__`` is the one ``def loss`` declares, read from the source's syntax tree without running
    it: callers decide from the parameter names what to pass (``chosen_lengths``, ``rejected_lengths``).
    """

    def __init__(self, source: str, lock_down: Callable[[], dict[str, str]]) -> None:
        self.source, self._lock_down = source, lock_down
        self.protections: dict[str, str] = {}
        self._fn: Callable[..., Any] | None = None
        self.__signature__ = declared_signature(source)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._fn is None:
            from lossforge.evaluate.contract import compile_loss

            self.protections = self._lock_down()
            self._fn = compile_loss(self.source)
        return self._fn(*args, **kwargs)


def declared_signature(source: str) -> inspect.Signature | None:
    """The parameters (names and kinds; defaults shown as ``...``) of the module-level ``def loss`` in
    ``source``, or None when there is none to read (then the caller's default applies)."""
    try:
        tree = parse_source(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "loss"]
    if not found:
        return None
    arguments = found[-1].args
    positional = [*arguments.posonlyargs, *arguments.args]
    first_default = len(positional) - len(arguments.defaults)
    kind = inspect.Parameter
    parameters = [
        kind(
            a.arg,
            kind.POSITIONAL_ONLY if a in arguments.posonlyargs else kind.POSITIONAL_OR_KEYWORD,
            default=... if i >= first_default else kind.empty,
        )
        for i, a in enumerate(positional)
    ]
    if arguments.vararg is not None:
        parameters.append(kind(arguments.vararg.arg, kind.VAR_POSITIONAL))
    for a, default in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True):
        parameters.append(kind(a.arg, kind.KEYWORD_ONLY, default=kind.empty if default is None else ...))
    if arguments.kwarg is not None:
        parameters.append(kind(arguments.kwarg.arg, kind.VAR_KEYWORD))
    try:
        return inspect.Signature(parameters)
    except ValueError:  # an order Python itself would refuse; compile_loss will say so
        return None


def watch_supervisor(interval_s: float = 1.0) -> str:
    """Kill this rank (and its process group) when the ``lossforge retrain`` process named by
    ``$LOSSFORGE_RETRAIN_SUPERVISOR`` is gone: a rank must not outlive the command that launched it, even when
    that command was killed without a chance to stop it (SIGKILL, a test's timeout). Returns the report.

    Call it before the lock-down: ``/proc/PID/stat`` of the supervisor is opened here, once, and re-read
    through that descriptor (the audit hook refuses opening another process's ``/proc`` entry); reading it
    fails once that process has ended, even if its pid is reused.
    """
    pid, _, started = os.environ.get(SUPERVISOR_VAR, "").partition(":")
    if not pid.isdigit() or not sys.platform.startswith("linux"):
        return f"unavailable: ${SUPERVISOR_VAR} is not set, or this is not Linux"
    try:
        descriptor = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError as exc:
        return f"unavailable: {exc}"
    if _start_time(_read_stat(descriptor)) != started:
        os.close(descriptor)
        _stop_rank(int(pid))  # already gone
    thread = threading.Thread(
        target=_watch, args=(int(pid), descriptor, interval_s), name="supervisor-watch", daemon=True
    )
    thread.start()
    return "on"


def _watch(pid: int, descriptor: int, interval_s: float) -> None:
    while _start_time(_read_stat(descriptor)):  # "" once it has ended (or is a zombie waiting to be reaped)
        time.sleep(interval_s)
    _stop_rank(pid)


def _stop_rank(pid: int) -> None:
    log.error("the lossforge retrain process (pid %d) is gone; stopping this rank", pid)
    logging.shutdown()
    os.killpg(os.getpgid(0), signal.SIGKILL)  # this rank leads its own process group (torch's launcher starts it so)


def _read_stat(descriptor: int) -> str:
    try:
        return os.pread(descriptor, 4096, 0).decode("ascii", "replace")
    except OSError:  # ESRCH: the process has ended
        return ""


def _start_time(stat: str) -> str:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks), ``""`` for a zombie or no text: a pid and
    its start time name one process, even after the pid is reused."""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else ""


def process_start_time(pid: int) -> str:
    """The start time of process ``pid`` (``_start_time``), or ``""`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return _start_time(stat.read())
    except OSError:
        return ""


__all__ = [
    "LAUNCH_TAG_VAR",
    "PROTECTIONS",
    "SUPERVISOR_VAR",
    "DeferredLoss",
    "WriteAndProcessHook",
    "apply_rank_protections",
    "process_start_time",
    "watch_supervisor",
]
