"""run_isolated and apply_runtime_protections: statuses, process-group kills, and the OS-level lock-down.

Targets are module-level functions (they are pickled by reference into a child forked from the fork server).
The OS-level tests call libc through ctypes function pointers resolved *before* the lock-down, which is how
hostile code would get around the Python audit hook: seccomp, rlimits and the network namespace must hold.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lossforge.evaluate.isolation import (
    Cancelled,
    Limits,
    apply_runtime_protections,
    cancel_running,
    interruptible,
    run_isolated,
)

from tests.paths import ROOT
from tests.strict_isolation import assert_protections, require

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the sandbox's lock-down is Linux-specific"
)

MECHANISMS = {
    "rlimit_core",
    "rlimit_fsize",
    "rlimit_cpu",
    "rlimit_as",
    "rlimit_nproc",
    "network_namespace",
    "seccomp",
    "audit_hook",
}


def _add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


def _raise() -> None:
    raise ValueError("boom")


def _abort() -> None:
    os.abort()


def _not_json() -> object:
    return object()


def _spawn_grandchild_then_hang() -> None:
    child = subprocess.Popen(["sleep", "60"])
    print(f"grandchild={child.pid}", flush=True)
    while True:
        time.sleep(0.05)


def _burn_cpu() -> None:
    apply_runtime_protections(Limits(cpu_seconds=1))
    while True:
        pass


def _allocate_too_much() -> None:
    apply_runtime_protections(Limits(memory_bytes=256 * 1024**2))
    bytearray(2 * 1024**3)


def _raw_libc_after_lockdown(port: int) -> dict[str, object]:
    """Resolve libc functions first (so no audit event fires later), lock down, then call them."""
    libc = ctypes.CDLL(None, use_errno=True)
    calls = {name: getattr(libc, name) for name in ("open", "socket", "fork", "execv", "syscall")}
    calls["open"].argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    calls["execv"].argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
    report = apply_runtime_protections(Limits())

    def result(value: int) -> list[object]:
        return [value, errno.errorcode.get(ctypes.get_errno(), "")]

    argv = (ctypes.c_char_p * 2)(b"/bin/true", None)
    return {
        "report": report,
        "open_write": result(calls["open"](b"created_by_child.txt", os.O_WRONLY | os.O_CREAT, 0o644)),
        "open_read": result(calls["open"](b"/proc/self/status", os.O_RDONLY, 0)),
        "socket": result(calls["socket"](socket.AF_INET, socket.SOCK_STREAM, 0)),
        "fork": result(calls["fork"]()),
        "clone_process": result(calls["syscall"](56, signal.SIGCHLD, 0, 0, 0, 0)),  # x86_64 clone, no CLONE_THREAD
        "execv": result(calls["execv"](b"/bin/true", argv)),
        "port": port,
    }


def _connect_to_the_parent(port: int, own_namespace: bool) -> dict[str, object]:
    """Connect to a listener of the parent's loopback, after entering a network namespace of our own or not.

    Only the namespace is applied: no seccomp (which refuses ``socket`` itself) and no audit hook, so what
    stops the connection, if anything, is the namespace (the static policy never sees test code).
    """
    from lossforge.evaluate.isolation import lockdown

    state = "not requested"
    if own_namespace:
        try:
            lockdown._unshare_network()
            state = "on"
        except OSError as exc:
            state = f"unavailable: {exc}"
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        outcome = "connected"
    except OSError as exc:
        outcome = errno.errorcode.get(exc.errno or 0, str(exc))
    return {"network_namespace": state, "connect": outcome}


def _other_abi_syscall() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    report = apply_runtime_protections(Limits())
    print(f"report={json.dumps(report)}", flush=True)
    syscall(0x40000000 + 57)  # fork through the x32 ABI, which a filter written for x86_64 must not let through


def _threads_reads_and_output_still_work() -> dict[str, object]:
    import torch

    apply_runtime_protections(Limits())
    torch.set_num_threads(2)
    product = torch.ones(256, 256) @ torch.ones(256, 256)
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(1))
    thread.start()
    thread.join()
    print("still talking", flush=True)
    return {"product": float(product[0, 0]), "thread": seen, "read": len(Path("/proc/self/status").read_text()) > 0}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has already been killed


def test_value_comes_back_as_json() -> None:
    result = run_isolated(_add, 2, 3, limits=Limits(), timeout=30)
    assert (result.status, result.value, result.error) == ("ok", {"sum": 5}, None)


def test_exception_is_an_error_status_with_the_traceback_tail() -> None:
    result = run_isolated(_raise, limits=Limits(), timeout=30)
    assert result.status == "error" and result.error == "ValueError: boom"
    assert "Traceback" in result.stderr_tail


def test_unserialisable_result_is_an_error() -> None:
    result = run_isolated(_not_json, limits=Limits(), timeout=30)
    assert result.status == "error" and "not JSON-serialisable" in (result.error or "")


def test_crash_reports_the_signal() -> None:
    result = run_isolated(_abort, limits=Limits(), timeout=30)
    assert result.status == "crashed" and "SIGABRT" in (result.error or "")


def test_timeout_kills_the_whole_process_group() -> None:
    start = time.perf_counter()
    result = run_isolated(_spawn_grandchild_then_hang, limits=Limits(), timeout=1.5)
    assert result.status == "timeout" and time.perf_counter() - start < 5
    grandchild = int(result.stderr_tail.split("grandchild=")[1].split()[0])
    deadline = time.monotonic() + 2
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_cpu_limit_kills() -> None:
    result = run_isolated(_burn_cpu, limits=Limits(), timeout=20)
    assert result.status == "timeout" and "CPU-time limit" in (result.error or "")


def test_memory_limit_stops_allocation() -> None:
    result = run_isolated(_allocate_too_much, limits=Limits(), timeout=20)
    assert result.status == "memory"


def test_os_layer_refuses_writes_sockets_and_processes_without_the_audit_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the child inherits the caller's working directory
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = run_isolated(_raw_libc_after_lockdown, port, limits=Limits(), timeout=30)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    assert result.status == "ok", result
    value = result.value
    assert set(value["report"]) == MECHANISMS
    assert_protections(value["report"])
    require(value["report"], "seccomp")
    for call in ("open_write", "socket", "fork", "clone_process", "execv"):
        assert value[call] == [-1, "EPERM"], (call, value[call])
    assert value["open_read"][0] >= 0  # reading stays allowed: lazy imports need it
    assert list(tmp_path.iterdir()) == []


def test_network_namespace_alone_keeps_connections_from_the_parents_loopback() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        control = run_isolated(_connect_to_the_parent, port, False, limits=Limits(), timeout=30)
        listener.settimeout(5)
        listener.accept()[0].close()  # without the namespace the connection does arrive: the test can fail
        listener.setblocking(False)
        result = run_isolated(_connect_to_the_parent, port, True, limits=Limits(), timeout=30)
        assert result.status == "ok", result
        require({"network_namespace": result.value["network_namespace"]}, "network_namespace")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing arrived
    assert (control.status, control.value["connect"]) == ("ok", "connected"), control
    assert result.value["connect"] == "ENETUNREACH"  # the new namespace has only a downed loopback


def test_threads_reads_and_open_pipes_still_work() -> None:
    result = run_isolated(_threads_reads_and_output_still_work, limits=Limits(), timeout=30)
    assert result.status == "ok", result
    assert result.value == {"product": 256.0, "thread": [1], "read": True}
    assert "still talking" in result.stderr_tail


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="Limits.cpu_seconds must be positive"):
        Limits(cpu_seconds=0)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x32 ABI exists on x86_64 only")
def test_syscalls_of_another_abi_kill_the_process() -> None:
    result = run_isolated(_other_abi_syscall, limits=Limits(), timeout=10)
    require(json.loads(result.stderr_tail.split("report=")[1].splitlines()[0]), "seccomp")
    assert result.status == "crashed" and "SIGSYS" in (result.error or "")


def _print_then_sleep() -> None:
    print("started", flush=True)
    time.sleep(60)


def test_cancel_running_kills_the_runs_in_progress_and_refuses_new_ones_until_the_block_ends() -> None:
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = run_isolated(_print_then_sleep, limits=Limits(), timeout=60)
        except BaseException as exc:  # noqa: BLE001 - what the caller's thread sees is under test
            outcome["raised"] = exc

    with interruptible():
        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(1.0)  # the run is in progress
        cancel_running()
        thread.join(timeout=20)
        assert not thread.is_alive()  # killed, not waited for: its target sleeps 60 s
        assert isinstance(outcome.get("raised"), Cancelled), outcome
        with pytest.raises(Cancelled):
            run_isolated(_add, 1, 2, limits=Limits(), timeout=30)
    assert run_isolated(_add, 1, 2, limits=Limits(), timeout=30).value == {"sum": 3}


def test_the_block_ends_the_cancellation_also_where_sigint_is_ignored() -> None:
    """Under ``nohup`` or in a shell's background job SIGINT is ignored and ``interruptible`` installs nothing, but a
    ``cancel_running()`` inside it must still end with the block: later runs start again."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interruptible():
            cancel_running()
            with pytest.raises(Cancelled):
                run_isolated(_add, 1, 2, limits=Limits(), timeout=30)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # left as it was
        try:
            result = run_isolated(_add, 1, 2, limits=Limits(), timeout=30)
        except Cancelled:  # a KeyboardInterrupt: raised on, it would end the whole pytest session
            pytest.fail("runs are still cancelled after the interruptible block ended")
        assert result.value == {"sum": 3}
    finally:
        signal.signal(signal.SIGINT, previous)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_the_isolation_tests_pass_when_started_with_sigint_ignored(tmp_path: Path) -> None:
    """``nohup python -m pytest tests/evaluate/isolation/test_lockdown.py``: the cancellation test, then a test
    that runs a child."""
    root = ROOT
    selected = "test_cancel_running_kills_the_runs_in_progress or test_value_comes_back_as_json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/evaluate/isolation/test_lockdown.py",
            "-k",
            selected,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_ignore_sigint,
        check=False,
        env={**os.environ, "LOSSFORGE_CACHE": str(tmp_path / "cache")},
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "2 passed" in completed.stdout, completed.stdout[-3000:]
