"""`lossforge retrain` under the guarantees of discovery: the candidate runs outside the sandbox, so

- the static policy is applied again right before the launch (``--no-static-policy`` turns it off, for tests
  of the deeper layers such as these);
- the launch and its ranks get an environment without secrets, and each rank locks itself down (audit hook,
  no core files) before the loss first runs;
- no process of the launch outlives the command: not at ``--timeout``, not at Ctrl-C, not when the command
  itself is SIGKILLed (the ranks lead sessions of their own, so killing the launcher's group is not enough);
- every rank's output is in ``OUT/train.log``.

The launcher's guarantees are first tested on stand-in launches (plain Python processes, seconds), then
end to end through real 2-process CPU retrains of the hostile fixtures ``tests/hostile/retrain_*.py``.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lossforge.discovery.commands.retrain import default_out
from lossforge.evaluate.contract import CandidateError
from lossforge.evaluate.retrain.config import LossSpec
from lossforge.evaluate.retrain.errors import CandidateRejected
from lossforge.evaluate.retrain.launcher import LaunchPlan, run_launch
from lossforge.evaluate.retrain.lockdown import LAUNCH_TAG_VAR, DeferredLoss
from lossforge.evaluate.retrain.pipeline import train_and_evaluate
from lossforge.evaluate.retrain.processes import GRACE_S, stop_launch, tagged_processes

from tests.paths import HOSTILE, ROOT
from tests.retrain_launches import CLI, SHORT, kill_processes_mentioning, processes_mentioning
from tests.tiny_hf import build_tiny_model, standard_rows, write_jsonl


def fake_launcher(marker: str) -> list[str]:
    """A stand-in for torch's elastic launcher: it starts a "rank" that leads a session of its own, as torch
    does. ``marker`` is in both command lines, so the test finds what is left of them."""
    rank = f"import time; print('rank up', flush=True); time.sleep(600)  # {marker}"
    script = (
        f"import subprocess, sys, time\nrank = subprocess.Popen([sys.executable, '-c', {rank!r}], "
        f"start_new_session=True)\nprint('launcher up', rank.pid, flush=True)\ntime.sleep(600)  # {marker}\n"
    )
    return [sys.executable, "-c", script]


@pytest.fixture()
def marker() -> Iterator[str]:
    """A unique string for the stand-in launch's command lines; what still runs with it at the end is killed."""
    value = f"stand-in-{uuid.uuid4().hex}"
    yield value
    kill_processes_mentioning(value)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.2)


# --- the launcher, on stand-in launches ---------------------------------------------------------------------


def test_stop_launch_reaches_ranks_in_sessions_of_their_own(tmp_path: Path, marker: str) -> None:
    token = uuid.uuid4().hex
    log = (tmp_path / "out.log").open("w")
    launcher = subprocess.Popen(
        fake_launcher(marker),
        env={**os.environ, LAUNCH_TAG_VAR: token},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_for(lambda: len(tagged_processes(token)) == 2, 60, "the launcher and its rank")
    rank = next(pid for pid in tagged_processes(token) if pid != launcher.pid)
    assert os.getpgid(rank) != launcher.pid  # killing the launcher's group would miss it
    stop_launch(launcher, token, grace_s=5)
    assert tagged_processes(token) == [] and not _alive(rank) and launcher.returncode is not None


def test_timeout_and_ctrl_c_stop_every_process_of_a_launch(tmp_path: Path, marker: str) -> None:
    plan = LaunchPlan(fake_launcher(marker), {}, "a stand-in launch")
    started = time.monotonic()
    outcome = run_launch(plan, log_path=tmp_path / "train.log", timeout_s=3)
    assert outcome.timed_out and outcome.returncode is None
    assert time.monotonic() - started < 3 + GRACE_S + 5
    log = (tmp_path / "train.log").read_text()
    assert "launcher up" in log and "rank up" in log  # the rank's output is in the log too
    assert processes_mentioning(marker) == []

    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    signal.alarm(3)  # Ctrl-C in the middle of the launch
    try:
        with pytest.raises(KeyboardInterrupt):
            run_launch(plan, log_path=tmp_path / "train.log", timeout_s=None)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert processes_mentioning(marker) == []
    assert (tmp_path / "train.log").read_text().count("=== lossforge retrain: a stand-in launch") == 2  # appended


def test_the_launch_environment_holds_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-pass")
    monkeypatch.setenv("HF_TOKEN", "hf_should_not_pass")
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2")
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    plan = LaunchPlan([sys.executable, "-c", dump], {"ACCELERATE_USE_CPU": "true"}, "an environment dump")
    outcome = run_launch(plan, log_path=tmp_path / "train.log")
    assert outcome.returncode == 0
    environment = json.loads((tmp_path / "train.log").read_text().splitlines()[-1])
    assert not {"OPENAI_API_KEY", "HF_TOKEN", "MY_DB_PASSWORD"} & set(environment)
    assert environment["ACCELERATE_USE_CPU"] == "true" and environment["PYTHONUNBUFFERED"] == "1"
    assert environment["PATH"] == os.environ["PATH"]


def test_rank_lockdown_refuses_processes_writes_and_other_processes_secrets(tmp_path: Path) -> None:
    """The lock-down a rank applies before the loss first runs, in a fresh interpreter."""
    script = f"""
import json, os, subprocess
from pathlib import Path
from lossforge.evaluate.retrain.lockdown import apply_rank_protections
report = apply_rank_protections(Path({str(tmp_path / "out")!r}))
outcomes = {{}}
def attempt(name, action):
    try:
        action()
        outcomes[name] = "allowed"
    except Exception as exc:
        outcomes[name] = type(exc).__name__
attempt("write_out", lambda: open({str(tmp_path / "out" / "ok.txt")!r}, "w").close())
attempt("write_elsewhere", lambda: open({str(tmp_path / "elsewhere.txt")!r}, "w"))
attempt("write_lossforge_cache", lambda: open(os.path.join(os.environ["LOSSFORGE_CACHE"], "x"), "w"))
attempt("subprocess", lambda: subprocess.run(["true"]))
attempt("os_system", lambda: os.system("true"))
attempt("parent_environ", lambda: open(f"/proc/{{os.getppid()}}/environ", "rb").read())
attempt("own_environ", lambda: open("/proc/self/environ", "rb").read())
attempt("netrc", lambda: open(os.path.expanduser("~/.netrc")).read())
attempt("read_source", lambda: open({__file__!r}).read())
print(json.dumps({{"report": report, "outcomes": outcomes}}))
"""
    (tmp_path / "out").mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine example.com password hunter2\n")
    env = {**os.environ, "HOME": str(home), "LOSSFORGE_CACHE": str(home / ".cache" / "lossforge")}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["report"] == {"rlimit_core": "on", "audit_hook": "on"}
    assert result["outcomes"] == {
        "write_out": "allowed",
        "write_elsewhere": "PermissionError",
        "write_lossforge_cache": "PermissionError",
        "subprocess": "PermissionError",
        "os_system": "PermissionError",
        "parent_environ": "PermissionError",
        "own_environ": "allowed",
        "netrc": "FileNotFoundError",
        "read_source": "allowed",
    }
    assert not (tmp_path / "elsewhere.txt").exists()


def test_the_candidate_runs_only_after_the_lock_down_and_keeps_its_signature() -> None:
    """``DeferredLoss``: none of the candidate's code, module level included, runs before the rank is locked down;
    callers still read the parameters ``def loss`` declares (a loss taking lengths is called with them)."""
    locked: list[str] = []
    source = (
        "raise RuntimeError('module level ran')\n\n\n"
        "def loss(pc, pr, rc, rr, beta, chosen_lengths, rejected_lengths):\n    return pc\n"
    )
    deferred = DeferredLoss(source, lambda: locked.append("locked") or {"audit_hook": "on"})
    assert list(inspect.signature(deferred).parameters) == [
        "pc",
        "pr",
        "rc",
        "rr",
        "beta",
        "chosen_lengths",
        "rejected_lengths",
    ]
    assert locked == []
    with pytest.raises(CandidateError, match="module level ran"):
        deferred(1.0, 2.0, 3.0, 4.0, 0.1, chosen_lengths=1, rejected_lengths=1)
    assert locked == ["locked"] and deferred.protections == {"audit_hook": "on"}


def test_the_static_policy_is_applied_again_right_before_the_launch(tmp_path: Path) -> None:
    """``train_and_evaluate`` refuses a loss the policy rejects before it writes or launches anything, whatever
    ``prepare`` found (a caller of the library may build ``Prepared`` without it)."""
    source = (HOSTILE / "retrain_hang.py").read_text()
    prepared = types.SimpleNamespace(config=types.SimpleNamespace(static_policy=True), recipe=None)
    with pytest.raises(CandidateRejected, match="rejects retrain_hang at stage static: .*getattr"):
        train_and_evaluate(prepared, LossSpec("retrain_hang", source), tmp_path / "out")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_the_default_output_directory_never_leaves_lossforge_retrain() -> None:
    assert default_out("../../etc/evil\nname").parent == Path("lossforge-retrain")
    assert default_out("../../etc/evil\nname").name.startswith("______etc_evil_name-")
    assert default_out("kto_like").name.startswith("kto_like-")


# --- end to end: real 2-process CPU retrains of hostile candidates ---------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retrain-isolation")
    return {
        "model": build_tiny_model(root / "model"),
        "pairs": write_jsonl(root / "pairs.jsonl", standard_rows(20)),
        "root": root,
    }


def _start(
    inputs: dict[str, Path], fixture: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Path]:
    out = inputs["root"] / f"out-{fixture}-{uuid.uuid4().hex[:8]}"  # unique: the processes are found by it
    args = [
        "retrain",
        str(HOSTILE / f"{fixture}.py"),
        "--no-static-policy",
        "--model",
        str(inputs["model"]),
        "--dataset",
        str(inputs["pairs"]),
        "--num-processes",
        "2",
        "--test-fraction",
        "0.2",
        "--out",
        str(out),
        "--json",
        *SHORT,
        *extra,
    ]
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return process, out


@pytest.fixture()
def cleanup_launches(inputs: dict[str, Path]) -> Iterator[None]:
    """Whatever a test leaves behind when it fails is killed: every process whose command line names a test
    output directory."""
    yield
    kill_processes_mentioning(str(inputs["root"] / "out-"))


def _finish(process: subprocess.Popen[str], seconds: float) -> tuple[str, str]:
    try:
        return process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"lossforge retrain did not end within {seconds} s; stderr:\n{stderr[-3000:]}")


def _spinning(out: Path) -> bool:
    """Both ranks are in the hang fixture's loop: each logged its lock-down, which happens on the loss's first call."""
    log = out / "train.log"
    return log.is_file() and log.read_text(errors="replace").count("protections before the loss first runs") == 2


@pytest.mark.usefixtures("cleanup_launches")
def test_timeout_kills_every_rank_of_a_hanging_loss(inputs: dict[str, Path]) -> None:
    timeout = 60
    process, out = _start(inputs, "retrain_hang", "--timeout", str(timeout))
    _wait_for(lambda: (out / "train.log").is_file() or process.poll() is not None, 300, "the launch")
    launched = time.monotonic()
    _wait_for(lambda: _spinning(out) or process.poll() is not None, timeout + 30, "both ranks in the loss")
    members = processes_mentioning(str(out))
    assert len(members) >= 4, members  # the CLI, accelerate launch, two ranks
    stdout, stderr = _finish(process, timeout + GRACE_S + 60)
    assert process.returncode == 1
    assert time.monotonic() - launched < timeout + GRACE_S + 20
    assert json.loads(stdout)["status"] == "timeout"
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"retrain of retrain_hang was killed after {timeout} s (--timeout)" in errors[0]
    assert processes_mentioning(str(out)) == [] and not any(_alive(pid) for pid in members)


@pytest.mark.usefixtures("cleanup_launches")
def test_ctrl_c_stops_every_rank(inputs: dict[str, Path]) -> None:
    process, out = _start(inputs, "retrain_hang")
    _wait_for(lambda: _spinning(out) or process.poll() is not None, 300, "both ranks in the loss")
    members = processes_mentioning(str(out))
    process.send_signal(signal.SIGINT)
    stdout, stderr = _finish(process, GRACE_S + 30)
    assert process.returncode == 1 and json.loads(stdout)["status"] == "aborted"
    assert "error: interrupted; every training process was stopped" in stderr
    assert processes_mentioning(str(out)) == [] and not any(_alive(pid) for pid in members)


@pytest.mark.usefixtures("cleanup_launches")
def test_ranks_stop_when_the_command_is_killed_outright(inputs: dict[str, Path]) -> None:
    """SIGKILL (a CI job's timeout) gives the command no chance to stop its launch: the ranks watch it and stop
    themselves, and torch's launcher ends with them. Nothing is left waiting in a collective."""
    process, out = _start(inputs, "retrain_hang")
    _wait_for(lambda: _spinning(out) or process.poll() is not None, 300, "both ranks in the loss")
    members = processes_mentioning(str(out))
    process.kill()
    process.communicate()
    _wait_for(lambda: not processes_mentioning(str(out)), 60, f"the ranks to stop ({members})")
    assert "is gone; stopping this rank" in (out / "train.log").read_text()


@pytest.mark.usefixtures("cleanup_launches")
def test_ranks_get_no_secret_and_every_rank_writes_to_train_log(inputs: dict[str, Path]) -> None:
    secrets = {
        "OPENAI_API_KEY": f"sk-lossforge-test-secret-{uuid.uuid4().hex}",
        "HF_TOKEN": f"hf_lossforge-test-secret-{uuid.uuid4().hex}",
    }
    process, out = _start(inputs, "retrain_secrets", env=secrets)
    stdout, stderr = _finish(process, 900)
    assert process.returncode == 0, stderr[-4000:]
    for value in secrets.values():  # in no file of the output, nor in what the command printed
        assert value not in stdout and value not in stderr
        for path in out.rglob("*"):
            assert not path.is_file() or value.encode() not in path.read_bytes(), path
    log = (out / "train.log").read_text()
    for rank in (0, 1):  # a line only the candidate, inside each rank, writes to its stderr
        assert f"retrain_secrets probe on rank {rank}" in log
    assert "retrain_secrets probe" not in stderr  # the console keeps a short progress
    document = json.loads(stdout)
    assert document["protections"]["static_policy"] == "off (--no-static-policy)"
    assert document["protections"]["rank"] == {"rlimit_core": "on", "audit_hook": "on", "supervisor_watch": "on"}
    assert "## Protections" in (out / "README.md").read_text()


def test_a_loss_the_static_policy_rejects_is_not_launched(inputs: dict[str, Path]) -> None:
    out = inputs["root"] / "never"
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "retrain",
            str(HOSTILE / "retrain_hang.py"),
            "--model",
            str(inputs["model"]),
            "--dataset",
            str(inputs["pairs"]),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 1
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "the checker rejects retrain_hang at stage static" in errors[0]
    assert not out.exists()
