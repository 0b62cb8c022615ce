"""The LLM client of every OpenAI-compatible endpoint (``client``), its errors, retry policy, budget and call
records. The proposer and the judge task import what they need from here."""

from lossforge.evaluate.llm.budget import Budget, BudgetExceeded
from lossforge.evaluate.llm.errors import (
    LLMAuthError,
    LLMBadResponse,
    LLMError,
    LLMModelNotFound,
    LLMRequestError,
    LLMServerError,
    LLMTimeout,
    LLMUnreachable,
)
from lossforge.evaluate.llm.records import LLMCall, LLMReply
from lossforge.evaluate.llm.retry import RetryPolicy

__all__ = [
    "Budget",
    "BudgetExceeded",
    "LLMAuthError",
    "LLMBadResponse",
    "LLMCall",
    "LLMClient",
    "LLMError",
    "LLMModelNotFound",
    "LLMReply",
    "LLMRequestError",
    "LLMServerError",
    "LLMTimeout",
    "LLMUnreachable",
    "RetryPolicy",
    "SystemPromptMode",
]


def __getattr__(name: str) -> object:
    # The client imports ``openai``; errors, budget and records stay importable without it.
    if name in ("LLMClient", "SystemPromptMode"):
        from lossforge.evaluate.llm import client

        return getattr(client, name)
    raise AttributeError(f"module 'lossforge.evaluate.llm' has no attribute {name!r}")
