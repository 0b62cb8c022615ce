"""What the ``openai`` package's exceptions mean for ``LLMClient``: whether a failure is worth retrying, how long
the server asks to wait, and the one clear :class:`LLMError` each becomes, for a chat call (``chat_error``) and
for the model listing of a preflight (``listing_error``)."""

from __future__ import annotations

import email.utils
import time

import openai
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

RETRY_STATUSES = frozenset({408, 409, 429})


class MalformedCompletion(Exception):
    """A 200 whose body lacks ``choices[0].message`` (retried like a transient failure)."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, MalformedCompletion, openai.APIResponseValidationError)):
        return True  # APITimeoutError is an APIConnectionError
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUSES or exc.status_code >= 500
    return False


def is_model_not_found(exc: openai.APIStatusError) -> bool:
    return exc.status_code == 404 or exc.code == "model_not_found"


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """``Retry-After-Ms`` or ``Retry-After`` (seconds or an HTTP date) of an error response, if any."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def chat_error(
    exc: BaseException, *, base_url: str, model: str, api_key_env: str, timeout_s: float, requests: int
) -> LLMError:
    """The ``LLMError`` of a chat call to ``base_url`` that failed with ``exc`` after ``requests`` request(s)."""
    where, tries = base_url, f"after {requests} attempt(s)"
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeout(
            f"no reply from {where} within {timeout_s:g} s {tries}; the server may be overloaded or "
            "the model slow: raise the timeout or check the server"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = _root_cause(exc)
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return LLMUnreachable(
                f"could not reach {where} : connection refused; is the server running? check --base-url"
            )
        return LLMUnreachable(f"could not reach {where} : {cause}; check --base-url and the network")
    if isinstance(exc, MalformedCompletion):
        return LLMBadResponse(f"{where} did not answer with a chat completion {tries}: {exc}")
    if isinstance(exc, openai.APIResponseValidationError):
        return LLMBadResponse(f"{where} answered with a malformed body {tries}: {exc.message}")
    if isinstance(exc, openai.APIStatusError):
        detail = _server_message(exc)
        if is_model_not_found(exc):
            return LLMModelNotFound(
                f"model {model!r} not found at {where} (HTTP {exc.status_code}: {detail}); check the model name "
                f"(GET {where}/models lists the served models)"
            )
        if exc.status_code == 401:
            return LLMAuthError(f"{where} rejected the API key (HTTP 401: {detail}); check the key in ${api_key_env}")
        if exc.status_code == 403:
            return LLMAuthError(f"{where} refused access (HTTP 403: {detail}); check the key's permissions")
        if exc.status_code in RETRY_STATUSES or exc.status_code >= 500:
            return LLMServerError(f"{where} kept failing {tries}: HTTP {exc.status_code}: {detail}")
        return LLMRequestError(f"{where} rejected the request (HTTP {exc.status_code}: {detail})")
    return LLMError(f"chat call to {where} failed {tries}: {describe(exc)}")


def listing_error(exc: openai.APIError, base_url: str) -> LLMError | None:
    """The ``LLMError`` of a ``GET /models`` to ``base_url`` that failed with ``exc``; None when the failure says
    nothing about the setup (no model list, or a broken one: the chat calls may still work)."""
    if isinstance(exc, openai.AuthenticationError):
        return LLMAuthError(
            f"{base_url} rejected the API key (HTTP 401: {exc.message}); set the key's "
            "environment variable (proposer.api_key_env, default OPENAI_API_KEY)"
        )
    if isinstance(exc, openai.PermissionDeniedError):
        return LLMAuthError(f"{base_url} refused access (HTTP 403: {exc.message}); check the key")
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnreachable(
            f"could not reach {base_url}: {exc.__cause__ or exc}; is the server running? check --base-url"
        )
    return None


def describe(exc: BaseException | None) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_server_message(exc)}"
    return f"{type(exc).__name__}: {exc}"


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def _root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


__all__ = [
    "RETRY_STATUSES",
    "MalformedCompletion",
    "chat_error",
    "describe",
    "is_model_not_found",
    "is_retryable",
    "listing_error",
    "retry_after_seconds",
]
