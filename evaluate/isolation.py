"""Run untrusted code in a fresh, locked-down process without paying Python's start-up cost each time.

Two pieces, used together by the checker and by the training engine:

``run_isolated(target, *args, limits=..., timeout=...)``
    Runs ``target(*args)`` in a new process forked from a pre-started server that already imported torch
    (multiprocessing's ``forkserver`` context, with ``torch`` and the caller's ``__main__`` preloaded), so
    a call costs milliseconds instead of the seconds an ``import torch`` takes. The child becomes the
    leader of its own process group (``setsid``); on timeout the whole group is killed with SIGKILL, and it
    is killed again after a normal exit so no grandchild outlives the run. The child's stdout and stderr go
    to a pipe whose last few KiB come back as ``stderr_tail``. Core dumps are disabled so a crash leaves no
    file behind.

    ``run_isolated`` does **not** apply the runtime protections: a target does its trusted setup first
    (the training engine loads a model and tokenizer, imports transformers/trl, opens files), then calls
    ``apply_runtime_protections(limits)`` itself, then runs candidate code. ``target`` must be a
    module-level function (it is pickled by reference) and must return a JSON-serialisable value: the
    result travels back as JSON, never as a pickle, because the child may run hostile code that could
    write to the result pipe, and unpickling its bytes would execute code in the parent.

``apply_runtime_protections(limits)``
    Called inside the child, after trusted setup and before untrusted code. Each mechanism is applied on
    its own and reported as ``"on"`` or ``"unavailable: <reason>"``, so a machine without one (another OS,
    no privileges) falls back to the rest instead of failing:

    - rlimits: ``RLIMIT_AS`` (address-space headroom above the current footprint), ``RLIMIT_CPU``,
      ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``, ``RLIMIT_CORE`` = 0;
    - a fresh network namespace (``unshare(CLONE_NEWNET)`` through libc, as Python 3.11 has no
      ``os.unshare``): no interface but a downed loopback, so no connection can be made anywhere;
    - a seccomp filter (libseccomp through ``pyseccomp``), synchronised to every thread, that refuses
      process creation (fork, vfork, execve, ``clone`` without ``CLONE_THREAD``; ``clone3`` answers ENOSYS so
      glibc falls back to ``clone`` for the threads torch starts), writable opens and every call that
      creates, removes or renames files, socket creation and connection, signals to other processes,
      raising rlimits, namespaces, ptrace, io_uring and kernel-module calls. Reading files stays allowed
      (lazy imports need it), and so do reads and writes on descriptors that are already open;
    - a Python audit hook refusing the same at the interpreter level (it gives clearer error messages, but
      ctypes can bypass it, which is why the operating-system mechanisms above come first).

    The namespace and filter cover the calling thread and the threads it starts later; the filter is
    synchronised to all threads (``TSYNC``). Threads that existed before keep the host network namespace,
    but they only run torch kernels, never candidate Python code.
"""

from __future__ import annotations

import ctypes
import errno
import json
import multiprocessing
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

try:  # imported here, in the fork server, because importing it runs `ldconfig` to find libseccomp (~30 ms)
    import pyseccomp as _seccomp
except (ImportError, OSError, RuntimeError) as _seccomp_missing:  # another OS, or libseccomp not installed
    _seccomp = None
    _SECCOMP_MISSING = f"pyseccomp cannot be loaded: {_seccomp_missing}"

IsolatedStatus = Literal["ok", "timeout", "crashed", "memory", "error"]

STDERR_TAIL_BYTES = 8192
MAX_RESULT_BYTES = 16 * 1024 * 1024  # a result larger than this is hostile or a bug; the child is killed
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
_WRITE_OPEN_BITS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)
_TIOCSTI = 0x5412  # ioctl that injects keystrokes into a terminal


@dataclass(frozen=True)
class Limits:
    """Resource limits of one isolated run (defaults suit checking a candidate on synthetic inputs).

    Attributes:
        cpu_seconds: CPU time (all threads) the process may use after protections are applied; SIGXCPU,
            then SIGKILL one second later.
        memory_bytes: address space the process may add to its footprint at the time protections are
            applied (``RLIMIT_AS`` = current size + this); allocations beyond it fail with MemoryError.
        file_size_bytes: largest file the process may write (``RLIMIT_FSIZE``); writes past it fail with
            EFBIG instead of killing the process.
        max_processes: tasks (processes and threads) the user may add (``RLIMIT_NPROC``; the kernel does
            not enforce it for root, where seccomp's refusal to fork is what stops a fork bomb).
        wall_seconds: default wall-clock timeout of ``run_isolated`` when none is given.
    """

    cpu_seconds: float = 20.0
    memory_bytes: int = 2 * 1024**3
    file_size_bytes: int = 0
    max_processes: int = 64
    wall_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "max_processes", "wall_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}.")
        if self.file_size_bytes < 0:
            raise ValueError(f"Limits.file_size_bytes must be >= 0, got {self.file_size_bytes!r}.")


@dataclass(frozen=True)
class IsolatedResult:
    """Outcome of ``run_isolated``. ``value`` is the JSON round-trip of what the target returned."""

    status: IsolatedStatus
    value: Any = None
    error: str | None = None
    stderr_tail: str = ""
    seconds: float = 0.0
    exitcode: int | None = None


# --------------------------------------------------------------------------------------------- protections


def apply_runtime_protections(limits: Limits) -> dict[str, str]:
    """Lock the current process down; returns mechanism -> ``"on"`` or ``"unavailable: <reason>"``.

    Irreversible. Call it in a child process only, after trusted setup and before untrusted code.
    """
    report: dict[str, str] = {}
    # A write past RLIMIT_FSIZE raises SIGXFSZ, which would kill the process instead of failing the write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    report.update(_apply_rlimits(limits))
    report["network_namespace"] = _guard(_unshare_network)
    report["seccomp"] = _guard(_load_seccomp_filter)
    # Last: from here on the hook also refuses ctypes, which pyseccomp itself needs to load the filter.
    report["audit_hook"] = _guard(lambda: sys.addaudithook(_audit_hook))
    return report


def _guard(action: Callable[[], object]) -> str:
    try:
        action()
    except Exception as exc:  # each mechanism is optional; its failure is reported, not raised
        return f"unavailable: {type(exc).__name__}: {exc}"
    return "on"


def _apply_rlimits(limits: Limits) -> dict[str, str]:
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_used = self_usage.ru_utime + self_usage.ru_stime
    cpu_soft = int(cpu_used + limits.cpu_seconds) + 1
    settings: dict[str, tuple[int, tuple[int, int]]] = {
        "rlimit_core": (resource.RLIMIT_CORE, (0, 0)),
        "rlimit_fsize": (resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes)),
        "rlimit_cpu": (resource.RLIMIT_CPU, (cpu_soft, cpu_soft + 1)),
        "rlimit_as": (resource.RLIMIT_AS, (_address_space() + limits.memory_bytes,) * 2),
        "rlimit_nproc": (resource.RLIMIT_NPROC, (_user_tasks() + limits.max_processes,) * 2),
    }
    report: dict[str, str] = {}
    for name, (which, (soft, hard)) in settings.items():
        report[name] = _guard(lambda which=which, soft=soft, hard=hard: _lower_rlimit(which, soft, hard))
    if os.geteuid() == 0 and report["rlimit_nproc"] == "on":
        report["rlimit_nproc"] = "unavailable: the kernel does not enforce RLIMIT_NPROC for root (seccomp refuses fork)"
    return report


def _lower_rlimit(which: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard, soft = min(hard, current_hard), min(soft, current_hard)
    resource.setrlimit(which, (soft, hard))


def _address_space() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _user_tasks() -> int:
    """Tasks (threads included) of this real uid: what RLIMIT_NPROC counts against."""
    if os.geteuid() == 0:
        return 0  # not enforced for root; skip the /proc scan
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields.get("Threads", "1"))
        except (OSError, KeyError, ValueError):
            continue  # the process ended while we looked
    return count


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unshare_network() -> None:
    if not sys.platform.startswith("linux"):
        raise OSError(f"network namespaces are Linux-only (this is {sys.platform})")
    if _libc().unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET) failed: {os.strerror(code)}")


def _load_seccomp_filter() -> None:
    if _seccomp is None:
        raise OSError(_SECCOMP_MISSING)
    sc = _seccomp
    deny = sc.ERRNO(errno.EPERM)
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    filt.set_attr(sc.Attr.CTL_TSYNC, 1)  # apply to every thread torch already started, not only this one
    # A syscall of another ABI (x32, i386) kills the whole process; killing one thread would leave it hanging.
    filt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    always_denied = (
        # process creation and program execution
        "fork", "vfork", "execve", "execveat",
        # creating, removing, renaming or changing files
        "creat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir",
        "link", "linkat", "symlink", "symlinkat", "truncate", "ftruncate", "fallocate", "mknod", "mknodat",
        "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "utime", "utimes",
        "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
        "fremovexattr", "name_to_handle_at", "open_by_handle_at",
        # network
        "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
        # other processes, privileges, kernel state; io_uring would perform all of the above unfiltered
        "ptrace", "process_vm_readv", "process_vm_writev", "tkill", "pidfd_open", "pidfd_send_signal",
        "pidfd_getfd", "setrlimit", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
        "reboot", "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
        "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "perf_event_open", "acct", "swapon", "swapoff", "sethostname", "setdomainname",
    )  # fmt: skip
    for name in always_denied:
        _add_rule(sc, filt, deny, name)
    # clone3 passes its flags in a struct seccomp cannot read; ENOSYS makes glibc fall back to clone.
    _add_rule(sc, filt, sc.ERRNO(errno.ENOSYS), "clone3")
    _add_rule(sc, filt, deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))  # a process, not a thread
    _add_rule(sc, filt, sc.ERRNO(errno.ENOSYS), "openat2")  # flags in a struct; glibc's open uses openat
    for bit in _WRITE_OPEN_BITS:
        _add_rule(sc, filt, deny, "open", sc.Arg(1, sc.MASKED_EQ, bit, bit))
        _add_rule(sc, filt, deny, "openat", sc.Arg(2, sc.MASKED_EQ, bit, bit))
    pid = os.getpid()
    _add_rule(sc, filt, deny, "kill", sc.Arg(0, sc.NE, pid))
    _add_rule(sc, filt, deny, "tgkill", sc.Arg(0, sc.NE, pid))
    _add_rule(sc, filt, deny, "prlimit64", sc.Arg(2, sc.NE, 0))  # setting limits; reading them stays allowed
    _add_rule(sc, filt, deny, "ioctl", sc.Arg(1, sc.EQ, _TIOCSTI))
    filt.load()


def _add_rule(sc: Any, filt: Any, action: int, name: str, *args: Any) -> None:
    try:
        filt.add_rule(action, name, *args)
    except (ValueError, OSError):
        pass  # a syscall this architecture does not have (e.g. "open" on aarch64) needs no rule


_DENIED_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "pty.spawn", "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.link",
    "os.symlink", "os.utime", "os.chflags", "os.mkfifo", "os.mknod", "shutil.rmtree", "shutil.move",
    "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.make_archive", "shutil.unpack_archive",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "sys.remote_exec", "os.setns", "os.unshare",
    "os.pidfd_open", "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit", "resource.prlimit",
})  # fmt: skip


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        mode, flags = (args[1], args[2]) if len(args) >= 3 else (None, 0)
        writable = isinstance(mode, str) and any(c in mode for c in "wax+")
        if writable or (isinstance(flags, int) and any(flags & bit for bit in _WRITE_OPEN_BITS)):
            raise PermissionError(f"the sandbox refuses to open {args[0]!r} for writing")
    elif event in _DENIED_EVENTS:
        if event in ("os.kill", "signal.pthread_kill") and args and args[0] == os.getpid():
            return
        raise PermissionError(f"the sandbox refuses {event}")


# --------------------------------------------------------------------------------------------- the server

_PRELOAD: list[str] = ["torch", __name__]
_MAIN_ENV = "LOSSFORGE_FORKSERVER_MAIN"
_context: Any = None


def preload(modules: Iterable[str]) -> None:
    """Add modules for the fork server to import once; has no effect after the server has started."""
    for module in modules:
        if module not in _PRELOAD:
            _PRELOAD.append(module)


def _get_context() -> Any:
    """The forkserver context, started (importing torch once) on first use."""
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(_PRELOAD))
        os.environ[_MAIN_ENV] = f"{os.getpid()}:{_describe_main()}"
        _context = context
    return _context


def _describe_main() -> str:
    """How multiprocessing will tell each child to set up ``__main__``: ``name:<module>`` or ``path:<file>``."""
    main = sys.modules["__main__"]
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name:
        return f"name:{name}"
    path = getattr(main, "__file__", None)
    return f"path:{os.path.abspath(path)}" if path else ""


def _adopt_parent_main() -> None:
    """In the fork server: import the parent's ``__main__`` once, so forked children find it in place.

    Without this every child re-runs the caller's script (tens of milliseconds, and pytest's or the CLI's
    imports each time): Python 3.11's forkserver drops the main path it is meant to preload (it filters
    the preparation data for a key named ``main_path``, but the key is ``init_main_from_path``).
    """
    from multiprocessing import spawn

    _, _, main = os.environ.get(_MAIN_ENV, "").partition(":")
    kind, _, where = main.partition(":")
    try:
        if kind == "path" and where:
            spawn.import_main_path(where)
        elif kind == "name" and where:
            spawn._fixup_main_from_name(where)
    except Exception:  # a script that cannot be re-imported: children then set it up themselves, slower
        traceback.print_exc()


def _in_fork_server() -> bool:
    """True when imported as a preload by the fork server our caller started (as ``python -c ...``)."""
    owner = os.environ.get(_MAIN_ENV, "").partition(":")[0]
    return sys.argv[:1] == ["-c"] and owner == str(os.getppid())



def start_server() -> None:
    """Launch the fork server without waiting for it: its torch import overlaps with the caller's own imports.

    Call ``preload`` first for the modules children will need; ``warm_up`` (or the first run) waits for it.
    """
    from multiprocessing import forkserver

    _get_context()
    forkserver.ensure_running()


_server_ready = False
_server_lock = threading.Lock()  # check_many runs sandboxes from several threads


def warm_up() -> None:
    """Start the fork server and wait until it has imported torch, so no run's timeout pays for that.

    ``run_isolated`` calls it; call it earlier to move the start-up (seconds) out of the first run.
    """
    global _server_ready
    with _server_lock:
        if _server_ready:
            return
        process = _get_context().Process(target=_ready, daemon=True)
        process.start()  # answered only once the server has finished its preloads
        process.join()
        _server_ready = True


def _ready() -> None:
    """The no-op child of ``warm_up``."""


# --------------------------------------------------------------------------------------------- one run


def _child_main(target: Callable[..., Any], args: tuple[Any, ...], result: Connection, output: Connection) -> None:
    """Runs in the forked child: own process group, output to the pipe, result as JSON."""
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(output.fileno(), 1)
    os.dup2(output.fileno(), 2)
    output.close()
    try:
        payload: dict[str, Any] = {"status": "ok", "value": target(*args)}
    except MemoryError as exc:
        payload = {"status": "memory", "error": f"MemoryError: {exc}"}
    except BaseException as exc:  # everything, SystemExit included, is reported back rather than raised
        traceback.print_exc()
        payload = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    try:
        data = json.dumps(payload).encode()
    except (TypeError, ValueError) as exc:
        data = json.dumps({"status": "error", "error": f"the target's result is not JSON-serialisable: {exc}"}).encode()
    fd = result.fileno()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    result.close()
    sys.stdout.flush()
    sys.stderr.flush()


def run_isolated(
    target: Callable[..., Any], *args: Any, limits: Limits | None = None, timeout: float | None = None
) -> IsolatedResult:
    """Run ``target(*args)`` in a fresh process forked from the torch-loaded server (see module docstring).

    Never raises for what the target does: a timeout, crash, memory exhaustion or exception becomes the
    status of the result. ``limits.wall_seconds`` is the timeout when ``timeout`` is None; the limits are
    otherwise the target's to apply through ``apply_runtime_protections``.
    """
    limits = limits or Limits()
    timeout = limits.wall_seconds if timeout is None else timeout
    context = _get_context()
    warm_up()  # the server's start-up (importing torch) must not count against the target's timeout
    result_reader, result_writer = context.Pipe(duplex=False)
    output_reader, output_writer = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(target, args, result_writer, output_writer), daemon=True)
    start = time.perf_counter()
    try:
        process.start()
    finally:
        result_writer.close()
        output_writer.close()
    result, output, outcome = _collect(process, result_reader, output_reader, start + timeout)
    _kill_group(process)
    process.join()
    seconds = time.perf_counter() - start
    result_reader.close()
    output_reader.close()
    tail = output[-STDERR_TAIL_BYTES:].decode("utf-8", errors="replace")
    return _interpret(outcome, bytes(result), process.exitcode, tail, seconds, timeout)


def _collect(
    process: Any, result_reader: Connection, output_reader: Connection, deadline: float
) -> tuple[bytearray, bytearray, str]:
    """Read result and output until both pipes close; ``outcome`` is "done", "timeout" or "oversized"."""
    result, output = bytearray(), bytearray()
    buffers = {result_reader.fileno(): result, output_reader.fileno(): output}
    sentinel = process.sentinel
    exited_at: float | None = None
    while buffers:
        now = time.perf_counter()
        if now >= deadline:
            return result, output, "timeout"
        # After the child exits, a grandchild may still hold the pipes open: give it a moment, not forever.
        if exited_at is not None and now - exited_at > 0.5:
            break
        waiting = [*buffers, sentinel] if exited_at is None else list(buffers)
        ready, _, _ = select.select(waiting, [], [], min(deadline - now, 0.5))
        for fd in ready:
            if fd == sentinel:
                exited_at = time.perf_counter()
                _kill_group(process)
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                del buffers[fd]
                continue
            buffer = buffers[fd]
            buffer += chunk
            if buffer is output and len(output) > 4 * STDERR_TAIL_BYTES:
                del output[: -STDERR_TAIL_BYTES]  # keep only the tail of a flood of output
            if buffer is result and len(result) > MAX_RESULT_BYTES:
                return result, output, "oversized"
    return result, output, "done"


def _kill_group(process: Any) -> None:
    """SIGKILL the child's process group (it called setsid, so the group id is its pid) and the child."""
    if process.pid is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone, or the child died before its setsid
    if process.exitcode is None:
        process.kill()


def _interpret(outcome: str, raw: bytes, exitcode: int | None, tail: str, seconds: float, timeout: float) -> IsolatedResult:
    def result(status: IsolatedStatus, error: str | None, value: Any = None) -> IsolatedResult:
        return IsolatedResult(status, value, error, tail, seconds, exitcode)

    if outcome == "timeout":
        return result("timeout", f"did not finish within the wall-clock limit of {timeout:g} s and was killed")
    if outcome == "oversized":
        return result("error", f"returned more than {MAX_RESULT_BYTES} bytes of result and was killed")
    if raw:
        try:
            payload = json.loads(raw)
            status = payload["status"]
            if status not in ("ok", "error", "memory"):
                raise ValueError(status)
        except (ValueError, KeyError, TypeError):
            return result("crashed", "the child process sent back a malformed result")
        return result(status, payload.get("error"), payload.get("value"))
    if exitcode is not None and exitcode < 0:
        signum = -exitcode
        name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
        if signum == signal.SIGXCPU:
            return result("timeout", "exceeded its CPU-time limit and was killed (SIGXCPU)")
        if signum == signal.SIGKILL:
            return result("memory", "was killed by SIGKILL without a timeout, most likely for exhausting memory")
        return result("crashed", f"the process was killed by signal {name}")
    return result("crashed", f"the process exited with code {exitcode} without returning a result")


__all__ = [
    "IsolatedResult", "Limits", "apply_runtime_protections", "preload", "run_isolated", "start_server", "warm_up",
]  # fmt: skip

if _in_fork_server():  # last, so that the caller's script can import everything defined above
    _adopt_parent_main()
