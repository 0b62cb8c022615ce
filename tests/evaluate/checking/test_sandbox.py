"""The runtime layer: behavioural checks (in-process, fast) and hostile code with the static policy off.

With no static policy in front of it, the sandbox alone must refuse file writes, sockets and subprocesses,
kill endless loops at the timeout and stop memory bombs, leaving nothing on disk.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lossforge.evaluate.checking.runtime_checks import run_runtime_checks
from lossforge.evaluate.checking.sandbox import run_sandbox

from tests.paths import HOSTILE
from tests.strict_isolation import assert_protections


def _margin(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
    return (pc - rc) - (pr - rr)


def dpo(pc, pr, rc, rr, beta):  # type: ignore[no-untyped-def]
    return -F.logsigmoid(beta * _margin(pc, pr, rc, rr))


BROKEN: list[tuple[str, Callable[..., object], str]] = [
    (
        "mean instead of per pair",
        lambda pc, pr, rc, rr, b: dpo(pc, pr, rc, rr, b).mean(),
        "returned shape () on a float32 batch of 2 pairs, expected (2,)",
    ),
    ("python number", lambda pc, pr, rc, rr, b: 0.5, "returned a float"),
    ("overflow", lambda pc, pr, rc, rr, b: torch.exp(-pc) * 0 + dpo(pc, pr, rc, rr, b), "non-finite values"),
    ("detached", lambda pc, pr, rc, rr, b: dpo(pc, pr, rc, rr, b).detach(), "not differentiable"),
    ("ignores rejected", lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - rc)), "`policy_rejected_logps` is None"),
    (
        "random",
        lambda pc, pr, rc, rr, b: dpo(pc, pr, rc, rr, b) + torch.rand(pc.shape),
        "different values for the same inputs",
    ),
    ("constant", lambda pc, pr, rc, rr, b: (pc - pc) + (pr - pr), "same values for two different batches"),
    (
        "wrong direction",
        lambda pc, pr, rc, rr, b: F.logsigmoid(b * _margin(pc, pr, rc, rr)),
        "a gradient step would lower it",
    ),
    (
        "no signal at init",
        lambda pc, pr, rc, rr, b: _margin(pc, pr, rc, rr) ** 2,
        "a gradient step would leave it unchanged",
    ),
    (
        "in place on reference",
        lambda pc, pr, rc, rr, b: dpo(pc, pr, rc.mul_(2), rr, b),
        "modified its input `reference_chosen_logps`",
    ),
    ("in place on policy", lambda pc, pr, rc, rr, b: dpo(pc.mul_(2), pr, rc, rr, b), "modifies its inputs in place"),
    ("raises", lambda pc, pr, rc, rr, b: pc.view(3, -1), "raised RuntimeError"),
    ("not callable", None, "defines no callable `loss`"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("case", "fn", "fragment"), BROKEN, ids=[case for case, _, _ in BROKEN])
def test_runtime_check_rejects(case: str, fn: Callable[..., object], fragment: str) -> None:
    findings = run_runtime_checks(fn)
    assert len(findings.errors) == 1 and fragment in findings.errors[0], findings.errors


def test_bfloat16_only_checks_shape_finiteness_and_gradients() -> None:
    def float32_only(pc, pr, rc, rr, b):  # type: ignore[no-untyped-def]
        if pc.dtype == torch.bfloat16:
            return torch.log(pc)  # log of negative log-probs: nan
        return dpo(pc, pr, rc, rr, b)

    findings = run_runtime_checks(float32_only)
    assert "on a bfloat16 batch of 2 pairs" in findings.errors[0] and "non-finite" in findings.errors[0]


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about var() of one element
def test_batch_statistics_only_warn_at_batch_size_one() -> None:
    def standardized(pc, pr, rc, rr, b):  # type: ignore[no-untyped-def]
        margin = _margin(pc, pr, rc, rr)
        return -F.logsigmoid(b * margin) + 0.01 * (margin - margin.mean()) ** 2 / (margin.var() + 1)

    findings = run_runtime_checks(standardized)
    assert findings.errors == []
    assert "batch of 1 pair" in findings.warnings[0] and "Batch size 1 is allowed" in findings.warnings[0]


def test_bump_at_zero_margin_is_a_warning() -> None:
    def bump(pc, pr, rc, rr, b):  # type: ignore[no-untyped-def]
        x = b * _margin(pc, pr, rc, rr)
        return -F.logsigmoid(x) + 0.5 * torch.exp(-(x * x) * 50) * torch.sigmoid(x * 20)

    findings = run_runtime_checks(bump)
    assert findings.errors == [] and "bump around rho = 0" in findings.warnings[0]


def test_endless_call_is_interrupted_per_call() -> None:
    def spin(pc, pr, rc, rr, b):  # type: ignore[no-untyped-def]
        while pc is not None:
            pass

    start = time.perf_counter()
    findings = run_runtime_checks(spin, per_call_seconds=0.3)
    assert "did not return within 0.3 s" in findings.errors[0] and time.perf_counter() - start < 3


# --------------------------------------------------------------------- hostile code, static policy off

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the sandbox's lock-down is Linux-specific"
)


def hostile(name: str) -> str:
    return (HOSTILE / f"{name}.py").read_text(encoding="utf-8")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the sandbox child inherits the working directory
    return tmp_path


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("write_file", "refuses to open 'pwned_write.txt' for writing"),
        ("subprocess_spawn", "the sandbox refuses subprocess.Popen"),
        ("os_system", "the sandbox refuses os.system"),
        ("fork_bomb", "the sandbox refuses os.fork"),
        ("ctypes_libc", "the sandbox refuses ctypes.dlopen"),
        ("memory_bomb", "ran out of memory"),
        ("list_bomb", "ran out of memory"),
    ],
)
def test_runtime_layer_refuses_on_its_own(name: str, fragment: str, in_tmp: Path) -> None:
    outcome = run_sandbox(hostile(name), timeout=10)
    assert outcome.errors and fragment in outcome.errors[0], outcome.errors
    assert list(in_tmp.iterdir()) == []


def test_runtime_layer_refuses_sockets(in_tmp: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        code = hostile("socket_connect").replace('("127.0.0.1", 1)', f'("127.0.0.1", {listener.getsockname()[1]})')
        outcome = run_sandbox(code, timeout=10)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert "the sandbox refuses socket" in outcome.errors[0], outcome.errors


def test_runtime_layer_kills_an_unkillable_loop_at_the_timeout() -> None:
    start = time.perf_counter()
    outcome = run_sandbox(hostile("unkillable_loop"), timeout=2, per_call_seconds=5)
    assert outcome.status == "timeout" and "did not finish its checks within 2 s" in outcome.errors[0]
    assert time.perf_counter() - start < 6


def test_the_parent_enforces_the_per_call_limit_on_a_loop_that_swallows_the_alarm() -> None:
    start = time.perf_counter()
    outcome = run_sandbox(hostile("unkillable_loop"), timeout=20, per_call_seconds=1)
    assert outcome.errors == [
        (
            "a call on a float32 batch of 2 pairs did not return within 1 s: remove endless or per-element Python "
            "loops and use vectorised tensor operations."
        )
    ]
    assert time.perf_counter() - start < 6


def test_huge_output_is_cut_to_a_tail(in_tmp: Path) -> None:
    outcome = run_sandbox(hostile("huge_output"), timeout=20)
    assert len(outcome.stderr_tail) <= 8192
    assert list(in_tmp.iterdir()) == []


def test_isolation_report_lists_every_mechanism() -> None:
    outcome = run_sandbox(hostile("inplace_inputs"), timeout=10)
    assert "modified its input `reference_chosen_logps` in place" in outcome.errors[0]
    assert {"seccomp", "network_namespace", "audit_hook", "rlimit_as", "rlimit_cpu"} <= set(outcome.isolation)
    assert_protections(outcome.isolation)


def test_a_length_aware_loss_with_a_bump_at_zero_is_checked_with_its_lengths() -> None:
    def bump_per_token(pc, pr, rc, rr, b, chosen_lengths, rejected_lengths):  # type: ignore[no-untyped-def]
        x = 20.0 * b * ((pc - rc) / chosen_lengths.clamp(min=1) - (pr - rr) / rejected_lengths.clamp(min=1))
        return -F.logsigmoid(x) + 0.5 * torch.exp(-(x * x) * 50) * torch.sigmoid(x * 20)

    findings = run_runtime_checks(bump_per_token)
    assert findings.errors == [] and "bump around rho = 0" in findings.warnings[0]


def test_a_length_aware_loss_must_guard_its_divisions_by_a_length() -> None:
    def unguarded(pc, pr, rc, rr, b, chosen_lengths, rejected_lengths):  # type: ignore[no-untyped-def]
        return -F.logsigmoid(20.0 * b * (pc / chosen_lengths - pr / rejected_lengths) - 1.0)

    def guarded(pc, pr, rc, rr, b, chosen_lengths, rejected_lengths):  # type: ignore[no-untyped-def]
        return -F.logsigmoid(20.0 * b * (pc / chosen_lengths.clamp(min=1) - pr / rejected_lengths.clamp(min=1)) - 1.0)

    error = run_runtime_checks(unguarded).errors[0]
    assert "not finite on a float32 batch of 2 pairs" in error and "chosen_lengths.clamp(min=1)" in error
    assert run_runtime_checks(guarded).errors == []
