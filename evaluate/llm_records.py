"""Errors, retry policy, budget and call records of the LLM client (:mod:`lossforge.evaluate.llm`).

Kept apart from the client so the loop can type its archive rows and budget handling without importing
``openai``.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, ClassVar


class LLMError(RuntimeError):
    """A chat call failed. ``config_error``: the run cannot go on until the configuration is fixed."""

    config_error: ClassVar[bool] = False


class LLMUnreachable(LLMError):
    config_error = True


class LLMAuthError(LLMError):
    config_error = True


class LLMModelNotFound(LLMError):
    config_error = True


class LLMRequestError(LLMError):
    """The endpoint rejected the request (a 4xx other than 401/403/404); retrying would not help."""


class LLMServerError(LLMError):
    """Rate limits or server errors that outlasted the retries."""


class LLMTimeout(LLMError):
    """No reply within the per-request timeout, on every attempt."""


class LLMBadResponse(LLMError):
    """The endpoint answered 200 with a body that is not a chat completion, on every attempt."""


class BudgetExceeded(RuntimeError):
    """The budget is spent; raised before sending, so nothing was paid for. Not an :class:`LLMError`:
    callers that record-and-continue on LLM errors must let this one end the run."""


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` requests per call at most; waits ``initial_wait_s * 2**k`` capped at ``max_wait_s``,
    or the server's ``Retry-After`` (capped at ``max_retry_after_s``) when it sends one."""

    max_attempts: int = 5
    initial_wait_s: float = 1.0
    max_wait_s: float = 60.0
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_wait_s < 0 or self.max_wait_s < 0 or self.max_retry_after_s < 0:
            raise ValueError(
                f"waits must be >= 0, got initial_wait_s={self.initial_wait_s}, max_wait_s={self.max_wait_s}, "
                f"max_retry_after_s={self.max_retry_after_s}"
            )


class Budget:
    """Hard caps on calls, tokens (prompt + completion) and cost in USD; None means no cap.

    Shareable between clients (proposer and judge can draw on one budget). ``calls``/``tokens``/``cost_usd``
    start from the given values so a resumed run continues its spending. A call is counted when it is sent;
    tokens and cost when it returns, so concurrent calls in flight can overshoot the token and cost caps
    by at most their own usage.
    """

    def __init__(
        self,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
        *,
        calls: int = 0,
        tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        for name, cap in (("max_calls", max_calls), ("max_tokens", max_tokens), ("max_cost_usd", max_cost_usd)):
            if cap is not None and cap < 0:
                raise ValueError(f"{name} must be >= 0 or None (no cap), got {cap}")
        self.max_calls, self.max_tokens, self.max_cost_usd = max_calls, max_tokens, max_cost_usd
        self.calls, self.tokens, self.cost_usd = calls, tokens, cost_usd
        self._lock = threading.Lock()

    def exhausted_reason(self) -> str | None:
        """Why no further call may be sent, or None."""
        if self.max_calls is not None and self.calls >= self.max_calls:
            return f"{self.calls} of max_calls={self.max_calls} calls used"
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            return f"{self.tokens} of max_tokens={self.max_tokens} tokens used"
        if self.max_cost_usd is not None and self.cost_usd >= self.max_cost_usd:
            return f"${self.cost_usd:.4f} of max_cost_usd=${self.max_cost_usd:.4f} spent"
        return None

    def reserve(self) -> None:
        """Count one call about to be sent, or raise :class:`BudgetExceeded` if none is left."""
        with self._lock:
            reason = self.exhausted_reason()
            if reason is not None:
                raise BudgetExceeded(f"LLM budget exhausted: {reason}; raise the cap to continue")
            self.calls += 1

    def charge(self, tokens: int, cost_usd: float | None) -> None:
        with self._lock:
            self.tokens += tokens
            self.cost_usd += cost_usd or 0.0

    def snapshot(self) -> dict[str, float | int | None]:
        with self._lock:
            return {
                "calls": self.calls,
                "tokens": self.tokens,
                "cost_usd": self.cost_usd,
                "max_calls": self.max_calls,
                "max_tokens": self.max_tokens,
                "max_cost_usd": self.max_cost_usd,
            }


@dataclass(frozen=True)
class LLMCall:
    """One chat call as archived. ``messages`` are as sent (after ``merge``); ``attempts`` counts HTTP
    requests, the JSON-mode fallback included; ``json_mode`` tells whether ``response_format`` was sent on
    the request that answered. ``cost_usd`` is None when the price table has no entry for the model."""

    index: int
    model: str
    messages: tuple[dict[str, str], ...]
    reply: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float | None
    attempts: int
    json_mode: bool
    temperature: float
    seed: int | None
    started_at: float
    finish_reason: str | None = None
    error: str | None = None
    error_kind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["messages"] = [dict(m) for m in self.messages]
        return data


@dataclass(frozen=True)
class LLMReply:
    text: str
    record: LLMCall
