"""The sandboxed run of a candidate: a forked child executes the code under the runtime protections.

Parent side: ``run_sandbox(code, ...) -> SandboxOutcome``. Child side: ``sandbox_main`` does its trusted
setup (one torch thread; the profile module is already imported), locks itself down with
``apply_runtime_protections``, only then compiles the candidate (``contract.compile_loss``) and calls its
``loss`` in the runtime checks, and, when those pass, computes the profile in the same process (no second fork).

The child's answer is data (JSON), never code. What the parent cannot prevent: a candidate that passes the
static policy cannot reach the result pipe, but with the static policy turned off a candidate could forge
its own verdict; the runtime protections are there to protect the host, not the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from lossforge.evaluate.checking.profile import compute_profile
from lossforge.evaluate.checking.runtime_checks import PER_CALL_SECONDS, run_runtime_checks
from lossforge.evaluate.contract import CandidateError, compile_loss
from lossforge.evaluate.isolation import IsolatedResult, Limits, apply_runtime_protections, preload, run_isolated

DEFAULT_TIMEOUT = 10.0

# Forked children should find this module (and what it imports) already in memory.
preload([__name__])


@dataclass
class SandboxOutcome:
    """What the sandbox found. ``status`` is the isolated run's (``ok`` when the child answered)."""

    status: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    isolation: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    fingerprint: str | None = None
    batch_coupled: bool | None = None
    stderr_tail: str = ""
    seconds: float = 0.0


def _profile_of(fn: Any) -> tuple[dict[str, Any] | None, str | None, bool | None, list[str]]:
    """Profile, fingerprint and batch coupling of a loss that passed the checks (the profile never raises)."""
    try:
        profile = compute_profile(fn)
    except Exception as exc:  # noqa: BLE001 — a bug in profiling must not turn a valid candidate into a rejected one
        return None, None, None, [f"the profile could not be computed: {type(exc).__name__}: {exc}"]
    return profile.to_dict(), profile.fingerprint, profile.batch_coupled, []


def sandbox_main(code: str, limits: Limits, per_call_seconds: float) -> dict[str, Any]:
    """Child side (module level so that it pickles by reference). Returns a JSON-serialisable dict."""
    torch.set_num_threads(1)  # checks use tiny tensors; threads would only compete with other checks
    isolation = apply_runtime_protections(limits)
    answer: dict[str, Any] = {"isolation": isolation, "errors": [], "warnings": []}
    try:
        fn = compile_loss(code)
    except CandidateError as exc:
        answer["errors"].append(str(exc))
        return answer
    findings = run_runtime_checks(fn, per_call_seconds=per_call_seconds)
    answer["errors"] += findings.errors
    answer["warnings"] += findings.warnings
    if not findings.errors:
        profile, fingerprint, coupled, notes = _profile_of(fn)
        answer.update(profile=profile, fingerprint=fingerprint, batch_coupled=coupled)
        answer["warnings"] += notes
    return answer


def _failure_sentence(result: IsolatedResult, timeout: float, limits: Limits) -> str:
    if result.status == "timeout":
        return (
            f"the candidate did not finish its checks within {timeout:g} s and was killed: remove endless loops "
            "and make each call take milliseconds."
        )
    if result.status == "memory":
        return (
            f"the candidate exceeded the sandbox's memory limit ({limits.memory_bytes / 2**30:g} GiB) and was "
            "stopped: do not allocate large tensors or lists; the loss needs only (batch,)-sized tensors."
        )
    if result.status == "crashed":
        return f"the sandbox process crashed ({result.error}); avoid operations that abort the interpreter."
    return f"the sandbox failed: {result.error}"


def run_sandbox(
    code: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    limits: Limits | None = None,
    per_call_seconds: float = PER_CALL_SECONDS,
) -> SandboxOutcome:
    """Execute and check ``code`` in a fresh isolated process; never raises for what the code does."""
    limits = limits or Limits()
    result = run_isolated(sandbox_main, code, limits, per_call_seconds, limits=limits, timeout=timeout)
    value = result.value if isinstance(result.value, dict) else None
    if result.status != "ok" or value is None:
        return SandboxOutcome(
            result.status,
            errors=[_failure_sentence(result, timeout, limits)],
            stderr_tail=result.stderr_tail,
            seconds=result.seconds,
        )
    return SandboxOutcome(
        "ok",
        errors=[str(e) for e in value.get("errors", [])],
        warnings=[str(w) for w in value.get("warnings", [])],
        isolation={str(k): str(v) for k, v in dict(value.get("isolation", {})).items()},
        profile=value.get("profile"),
        fingerprint=value.get("fingerprint"),
        batch_coupled=value.get("batch_coupled"),
        stderr_tail=result.stderr_tail,
        seconds=result.seconds,
    )


__all__ = ["DEFAULT_TIMEOUT", "SandboxOutcome", "run_sandbox", "sandbox_main"]
