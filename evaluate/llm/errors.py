"""The errors of an LLM chat call, each one clear sentence; ``config_error`` tells "fix the setup" from
"this call failed"."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from lossforge.evaluate.llm.records import LLMCall


class LLMError(RuntimeError):
    """A chat call failed. ``config_error``: the run cannot go on until the configuration is fixed.
    ``record``: the failed call as archived (set by the client that raised it)."""

    config_error: ClassVar[bool] = False
    record: LLMCall | None = None


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


__all__ = [
    "LLMAuthError",
    "LLMBadResponse",
    "LLMError",
    "LLMModelNotFound",
    "LLMRequestError",
    "LLMServerError",
    "LLMTimeout",
    "LLMUnreachable",
]
