"""Runtime protections: lock a process down before it runs untrusted code (Linux; each part optional).

``apply_runtime_protections(limits)`` is called inside a child process, after its trusted setup (imports,
loading a model, opening files) and before untrusted code. Each mechanism is applied on its own and reported
as ``"on"`` or ``"unavailable: <reason>"``, so a machine without one (another OS, no privileges) falls back to
the rest instead of failing:

- rlimits: ``RLIMIT_AS`` (address-space headroom above the current footprint), ``RLIMIT_CPU``,
  ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``, ``RLIMIT_CORE`` = 0 (a crash leaves no core file);
- a fresh network namespace (``unshare(CLONE_NEWNET)`` through libc, as Python 3.11 has no ``os.unshare``):
  no interface but a downed loopback, so no connection can be made anywhere;
- a seccomp filter (libseccomp through ``pyseccomp``), synchronised to every thread, that refuses process
  creation (fork, vfork, execve, ``clone`` without ``CLONE_THREAD``; ``clone3`` answers ENOSYS so glibc falls
  back to ``clone`` for the threads torch starts), writable opens and every call that creates, removes or
  renames files, socket creation and connection, signals to other processes, raising rlimits, namespaces,
  ptrace, io_uring and kernel-module calls; a syscall of another ABI (x32, i386) kills the process. Reading
  files stays allowed (lazy imports need it), and so do reads and writes on descriptors already open;
- a Python audit hook refusing the same at the interpreter level (clearer error messages, but ctypes can
  bypass it, which is why the operating-system mechanisms come first).

The network namespace covers the calling thread and the threads it starts later; threads that existed
before keep the host's, but they only run torch kernels, never candidate Python code. The filter covers
all threads (``TSYNC``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:  # imported at module level, i.e. once in the fork server: importing it runs `ldconfig` (~30 ms)
    import pyseccomp as _seccomp
except (ImportError, OSError, RuntimeError) as _seccomp_missing:  # another OS, or libseccomp not installed
    _seccomp = None
    _SECCOMP_MISSING = f"pyseccomp cannot be loaded: {_seccomp_missing}"

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
    except Exception as exc:  # noqa: BLE001 — each mechanism is optional; its failure is reported, not raised
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
        "fork",
        "vfork",
        "execve",
        "execveat",
        # creating, removing, renaming or changing files
        "creat",
        "unlink",
        "unlinkat",
        "rename",
        "renameat",
        "renameat2",
        "mkdir",
        "mkdirat",
        "rmdir",
        "link",
        "linkat",
        "symlink",
        "symlinkat",
        "truncate",
        "ftruncate",
        "fallocate",
        "mknod",
        "mknodat",
        "chmod",
        "fchmod",
        "fchmodat",
        "chown",
        "fchown",
        "lchown",
        "fchownat",
        "utime",
        "utimes",
        "utimensat",
        "futimesat",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "removexattr",
        "lremovexattr",
        "fremovexattr",
        "name_to_handle_at",
        "open_by_handle_at",
        # network
        "socket",
        "socketpair",
        "connect",
        "bind",
        "listen",
        "accept",
        "accept4",
        # other processes, privileges, kernel state; io_uring would perform all of the above unfiltered
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "tkill",
        "pidfd_open",
        "pidfd_send_signal",
        "pidfd_getfd",
        "setrlimit",
        "unshare",
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "reboot",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "bpf",
        "keyctl",
        "add_key",
        "request_key",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "perf_event_open",
        "acct",
        "swapon",
        "swapoff",
        "sethostname",
        "setdomainname",
    )
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


# Audit events that start a process: refused in the sandbox and in every retrain rank once the candidate runs.
PROCESS_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "pty.spawn",
    }
)
_DENIED_EVENTS = PROCESS_EVENTS | frozenset(
    {
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.getaddrinfo",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.utime",
        "os.chflags",
        "os.mkfifo",
        "os.mknod",
        "shutil.rmtree",
        "shutil.move",
        "shutil.copyfile",
        "shutil.copymode",
        "shutil.copystat",
        "shutil.make_archive",
        "shutil.unpack_archive",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.cdata",
        "sys.remote_exec",
        "os.setns",
        "os.unshare",
        "os.pidfd_open",
        "os.kill",
        "os.killpg",
        "signal.pthread_kill",
        "resource.setrlimit",
        "resource.prlimit",
    }
)


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


__all__ = ["PROCESS_EVENTS", "Limits", "apply_runtime_protections"]
