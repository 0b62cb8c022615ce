"""Hard caps on LLM use (calls, tokens, cost) shared by every client of a run, and the error that ends it."""

from __future__ import annotations

import threading


class BudgetExceeded(RuntimeError):
    """The budget is spent; raised before sending, so nothing was paid for. Not an :class:`LLMError`:
    callers that record-and-continue on LLM errors must let this one end the run."""


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


__all__ = ["Budget", "BudgetExceeded"]
