"""The record of one chat call (what is archived) and a reply with its record.

Kept apart from the client so the loop can type its archive rows without importing ``openai``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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


__all__ = ["LLMCall", "LLMReply"]
