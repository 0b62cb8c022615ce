"""The sandboxed check of a candidate: the child runs the code, the parent judges what it did.

Code in a process can rewrite anything in that process: a candidate that replaced the checker's
``margin_push`` in its own process used to turn a rejection into a pass. So the child only *answers*: forked
from the pre-started server, it does its trusted setup (one torch thread), locks itself down
(``apply_runtime_protections``), reports which protections are on, and only then compiles the candidate
(``contract.compile_loss``); from then on it answers ``CallRequest``s with ``Observation``s, the raw outputs and
gradients of one call on inputs the parent generated. The runtime checks, the profile and the fingerprint run
here, in the parent, through ``SandboxObserver`` (``lossforge.evaluate.checking.observation``). The most a
candidate can do is choose its own outputs, which is what a loss is allowed to do.

Parent side: ``run_sandbox(code, ...) -> SandboxOutcome``. Child side: ``serve_loss``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from lossforge.evaluate.checking.observation import CallRequest, Observation, Observer, observe_call
from lossforge.evaluate.checking.profile import compute_profile
from lossforge.evaluate.checking.runtime_checks import PER_CALL_SECONDS, run_runtime_checks
from lossforge.evaluate.contract import CandidateError, compile_loss
from lossforge.evaluate.isolation import Limits, apply_runtime_protections, preload
from lossforge.evaluate.isolation.session import Channel, IsolatedSession, SessionEnd, SessionEnded

DEFAULT_TIMEOUT = 10.0
CALL_SLACK_SECONDS = 0.25  # a call's answer may take this long beyond its limit to cross the pipe

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


def serve_loss(channel: Channel, code: str, limits: Limits) -> None:
    """Child side (module level so that it pickles by reference): lock down, compile, answer calls."""
    torch.set_num_threads(1)  # checks use tiny tensors; threads would only compete with other checks
    channel.send({"isolation": apply_runtime_protections(limits)})  # before any candidate code has run
    try:
        fn = compile_loss(code)
    except CandidateError as exc:
        channel.send({"compiled": False, "error": str(exc)})
        return
    channel.send({"compiled": True})
    while (message := channel.receive()) is not None:
        channel.send(observe_call(fn, CallRequest.from_json(message)).to_json())


class SandboxObserver(Observer):
    """Asks the session's child for each call. A call over ``per_call_seconds`` kills the child and is observed
    as a timeout; with ``per_call_seconds`` None a call may take what is left of the session's time."""

    def __init__(self, session: IsolatedSession, per_call_seconds: float | None) -> None:
        self.session = session
        self.per_call_seconds = per_call_seconds

    def observe(self, request: CallRequest) -> Observation:
        if self.session.ended is not None:
            return Observation(error_type="stopped", error=f"the sandbox process ended: {self.session.ended.error}")
        limit = self.session.timeout if self.per_call_seconds is None else self.per_call_seconds + CALL_SLACK_SECONDS
        start = time.perf_counter()
        try:
            answer = self.session.request(request.to_json(), timeout=limit)
            return Observation.from_json(answer, seconds=time.perf_counter() - start)
        except SessionEnded as ended:
            if ended.end.status == "timeout" and not ended.end.overall_timeout:
                return Observation(error_type="timeout", error=ended.end.error, seconds=time.perf_counter() - start)
            return Observation(error_type="stopped", error=f"the sandbox process ended: {ended.end.error}")
        except ValueError as exc:  # a malformed observation: the child does not speak the protocol
            end = self.session.abort("crashed", f"the child sent a {exc}")
            return Observation(error_type="stopped", error=f"the sandbox process ended: {end.error}")


def _failure_sentence(end: SessionEnd, timeout: float, limits: Limits) -> str:
    if end.status == "timeout":
        return (
            f"the candidate did not finish its checks within {timeout:g} s and was killed: remove endless loops "
            "and make each call take milliseconds."
        )
    if end.status == "memory":
        return (
            f"the candidate exceeded the sandbox's memory limit ({limits.memory_bytes / 2**30:g} GiB) and was "
            "stopped: do not allocate large tensors or lists; the loss needs only (batch,)-sized tensors."
        )
    if end.status == "crashed":
        return f"the sandbox process crashed ({end.error}); avoid operations that abort the interpreter."
    return f"the sandbox failed: {end.error}"


def _judge(session: IsolatedSession, per_call_seconds: float, outcome: SandboxOutcome) -> None:
    """The handshake, then the runtime checks and (when they pass) the profile, all judged in this process."""
    hello = session.receive(timeout=session.timeout)
    isolation = hello.get("isolation") if isinstance(hello, dict) else None
    if not isinstance(isolation, dict):
        raise SessionEnded(SessionEnd("crashed", "the sandbox did not report its protections"))
    outcome.isolation = {str(k): str(v) for k, v in isolation.items()}
    compiled = session.receive(timeout=session.timeout)
    if not isinstance(compiled, dict) or compiled.get("compiled") is not True:
        error = compiled.get("error") if isinstance(compiled, dict) else None
        outcome.errors.append(str(error or "the candidate could not be compiled")[:2000])
        return
    observer = SandboxObserver(session, per_call_seconds)
    findings = run_runtime_checks(observer)
    outcome.errors += findings.errors
    outcome.warnings += findings.warnings
    if findings.errors:
        return
    observer.per_call_seconds = None  # as before the split: the profile is bounded by the session's deadline
    try:
        profile = compute_profile(observer)
    except Exception as exc:  # noqa: BLE001 — a bug in profiling must not turn a valid candidate into a rejected one
        outcome.warnings.append(f"the profile could not be computed: {type(exc).__name__}: {exc}")
        return
    outcome.profile, outcome.fingerprint = profile.to_dict(), profile.fingerprint
    outcome.batch_coupled = profile.batch_coupled


def run_sandbox(
    code: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    limits: Limits | None = None,
    per_call_seconds: float = PER_CALL_SECONDS,
) -> SandboxOutcome:
    """Execute ``code`` in a fresh isolated process and judge it here; never raises for what the code does."""
    limits = limits or Limits()
    outcome = SandboxOutcome("ok")
    with IsolatedSession(serve_loss, code, limits, timeout=timeout) as session:
        try:
            _judge(session, per_call_seconds, outcome)
        except SessionEnded:
            pass  # session.ended says why
        end = session.ended
        outcome.stderr_tail, outcome.seconds = session.stderr_tail, session.seconds
    per_call_timeout = end is not None and end.status == "timeout" and not end.overall_timeout and outcome.errors
    if end is not None and not per_call_timeout:
        # The child died, overran the whole check or broke the protocol: that, not a check's wording, is the news.
        outcome.status = end.status
        outcome.errors = [_failure_sentence(end, timeout, limits)]
        outcome.profile = outcome.fingerprint = outcome.batch_coupled = None
    return outcome


__all__ = ["DEFAULT_TIMEOUT", "SandboxObserver", "SandboxOutcome", "run_sandbox", "serve_loss"]
