"""Chat client for any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio).

One policy for everything that can go wrong on the wire, so callers (the ``openai`` proposer, the ``judge``
task) only see a reply or one clear exception:

- retries are ``tenacity``'s alone (the ``openai`` package's own retries are off): exponential backoff on
  429, 408/409, 5xx, timeouts, connection errors and malformed bodies, waiting what ``Retry-After`` says
  when the server says it;
- JSON mode (``response_format={"type": "json_object"}``) is requested where wanted; an endpoint that
  answers 400 to it is asked once more without it, and the client remembers not to send it again;
- every call (failed ones too) becomes an :class:`LLMCall` record, returned on the reply (``.record``) or the
  error (``LLMError.record``), kept in ``calls`` and handed to the optional ``on_call`` hook;
- a :class:`Budget` caps calls, tokens and cost; it is checked *before* a request is sent, so an exhausted
  budget ends a run cleanly with :class:`BudgetExceeded` instead of a half-paid call;
- ``system_prompt_mode="merge"`` folds system messages into the first user message, for chat templates
  that silently drop the system role (llama.cpp's Gemma format, for one);
- ``check_model()`` finds a bad endpoint, key or model before a run spends anything (``GET /models``).
What each of the ``openai`` package's exceptions becomes is :mod:`~lossforge.evaluate.llm.openai_errors`'s.
The client is thread-safe: a generation's proposals are requested concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai
import tenacity
from lossforge.evaluate.llm.budget import Budget
from lossforge.evaluate.llm.errors import LLMAuthError, LLMError, LLMModelNotFound
from lossforge.evaluate.llm.openai_errors import (
    MalformedCompletion,
    chat_error,
    describe,
    is_model_not_found,
    is_retryable,
    listing_error,
    retry_after_seconds,
)
from lossforge.evaluate.llm.records import LLMCall, LLMReply
from lossforge.evaluate.llm.retry import RetryPolicy

__all__ = ["LLMClient", "SystemPromptMode"]

logger = logging.getLogger(__name__)

SystemPromptMode = Literal["system", "merge"]
OPENAI_BASE_URL = "https://api.openai.com/v1"
# Local servers ignore the key, but the openai package refuses to start without one.
_PLACEHOLDER_KEY = "sk-no-key-required"


@dataclass
class _Attempts:
    """Per-call mutable state shared by the tenacity attempts of one call."""

    requests: int = 0
    json_mode_sent: bool = False


class LLMClient:
    """Chat completions against ``base_url`` (argument, else ``$OPENAI_BASE_URL``, else OpenAI's API); the key
    is ``api_key``, else the environment variable ``api_key_env`` (the key is never stored).

    ``prices`` maps model name to (USD per 1M input tokens, USD per 1M output tokens). ``on_call`` receives
    every :class:`LLMCall`; calls to it are serialized, made from the thread that made the chat call.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        budget: Budget | None = None,
        system_prompt_mode: SystemPromptMode = "system",
        temperature: float = 0.7,
        max_tokens: int | None = None,
        on_call: Callable[[LLMCall], None] | None = None,
    ) -> None:
        import os

        if not model:
            raise ValueError("model must be a non-empty model name, e.g. 'gpt-4o-mini' or 'llama3.1:8b'")
        if system_prompt_mode not in ("system", "merge"):
            raise ValueError(f"system_prompt_mode must be 'system' or 'merge', got {system_prompt_mode!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env  # named in the hints of key errors
        key = api_key or os.environ.get(api_key_env)
        if not key:
            if self.base_url == OPENAI_BASE_URL:
                raise LLMAuthError(f"no API key for {self.base_url}: set the environment variable {api_key_env}")
            key = _PLACEHOLDER_KEY
        self.prices = dict(prices or {})
        self.budget = budget
        if budget is not None and budget.max_cost_usd is not None and model not in self.prices:
            raise ValueError(
                f"a cost cap (max_cost_usd={budget.max_cost_usd}) needs a price for model {model!r}; "
                f"add it to the price table (known: {sorted(self.prices) or 'none'}) or drop the cost cap"
            )
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.system_prompt_mode: SystemPromptMode = system_prompt_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.on_call = on_call
        # None: not known yet; False: the endpoint answered 400 to response_format once, stop sending it.
        self.json_mode_supported: bool | None = None
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout_s, max_retries=0)
        self._lock = threading.Lock()
        self._callback_lock = threading.Lock()
        self._records: list[LLMCall] = []
        self._sleep: Callable[[float], None] = time.sleep  # tests replace it to observe backoff waits

    # public ----------------------------------------------------------------------------------------
    @property
    def calls(self) -> list[LLMCall]:
        with self._lock:
            return list(self._records)

    def usage(self) -> dict[str, float | int]:
        """Totals over this client's calls (the budget may be shared and count more)."""
        records = self.calls
        costs = [r.cost_usd for r in records if r.cost_usd is not None]
        return {
            "calls": len(records),
            "failed_calls": sum(r.error is not None for r in records),
            "prompt_tokens": sum(r.prompt_tokens for r in records),
            "completion_tokens": sum(r.completion_tokens for r in records),
            "cost_usd": float(sum(costs)),
        }

    def close(self) -> None:
        self._client.close()

    def check_model(self) -> None:
        """Fail fast on a bad endpoint, key or model: ``GET /models`` (at most 30 s, one retry), and the model
        among those listed (a tag suffix allowed: Ollama lists "llama3:latest" for "llama3").

        Raises ``LLMUnreachable``, ``LLMAuthError`` or ``LLMModelNotFound`` with the fix in the message. A server
        without a model list, or with a broken one, is not an error: the first chat call will tell.
        """
        listing = self._client.with_options(timeout=min(self.timeout_s, 30.0), max_retries=1)  # shares the pool
        try:
            served = [m.id for m in listing.models.list().data or []]
        except openai.APIError as exc:
            error = listing_error(exc, self.base_url)
            if error is None:
                return
            raise error from None
        model = self.model
        if served and not any(s == model or s.startswith(f"{model}:") for s in served):
            shown = ", ".join(served[:10]) + (" ..." if len(served) > 10 else "")
            raise LLMModelNotFound(
                f"model {model!r} is not served at {self.base_url} (it serves: {shown}); "
                "check --llm-model (proposer.model)"
            )

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        json_mode: bool = True,
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
    ) -> LLMReply:
        """Send one chat request; retries per the policy. The reply carries the call's record; an
        :class:`LLMError` carries it as ``record``. Raises :class:`BudgetExceeded` before sending."""
        sent = self._prepare(messages)
        temp = self.temperature if temperature is None else temperature
        if self.budget is not None:
            self.budget.reserve()
        state = _Attempts()
        started_at, t0 = time.time(), time.perf_counter()
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            sleep=self._sleep,
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=lambda rs: logger.warning(
                "LLM call to %s failed (%s); retrying",
                self.base_url,
                describe(rs.outcome.exception() if rs.outcome else None),
            ),
            reraise=True,
        )
        try:
            completion = retrying(self._send, sent, json_mode, temp, seed, max_tokens, state)
        except Exception as exc:
            error = chat_error(
                exc,
                base_url=self.base_url,
                model=self.model,
                api_key_env=self.api_key_env,
                timeout_s=self.timeout_s,
                requests=state.requests,
            )
            error.record = self._finish(sent, None, state, temp, seed, started_at, time.perf_counter() - t0, error)
            raise error from exc
        record = self._finish(sent, completion, state, temp, seed, started_at, time.perf_counter() - t0, None)
        return LLMReply(record.reply or "", record)

    # internals -------------------------------------------------------------------------------------
    def _prepare(self, messages: Sequence[Mapping[str, str]]) -> tuple[dict[str, str], ...]:
        if not messages:
            raise ValueError("messages must hold at least one {'role', 'content'} message")
        cleaned: list[dict[str, str]] = []
        for i, m in enumerate(messages):
            role, content = m.get("role"), m.get("content")
            if role not in ("system", "user", "assistant") or not isinstance(content, str):
                raise ValueError(
                    f"message {i} must be {{'role': 'system'|'user'|'assistant', 'content': str}}, got {dict(m)!r}"
                )
            cleaned.append({"role": role, "content": content})
        if self.system_prompt_mode == "merge":
            cleaned = _merge_system(cleaned)
        return tuple(cleaned)

    def _send(
        self,
        messages: tuple[dict[str, str], ...],
        json_mode: bool,
        temperature: float,
        seed: int | None,
        max_tokens: int | None,
        state: _Attempts,
    ) -> Any:
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages), "temperature": temperature}
        if seed is not None:
            kwargs["seed"] = seed
        if (max_tokens or self.max_tokens) is not None:
            kwargs["max_tokens"] = max_tokens or self.max_tokens
        use_format = json_mode and self.json_mode_supported is not False
        try:
            return self._create(kwargs, use_format, state)
        except openai.BadRequestError as exc:
            if not use_format or is_model_not_found(exc):
                raise
            logger.warning("%s rejected response_format (%s); retrying without JSON mode", self.base_url, exc)
        completion = self._create(kwargs, False, state)
        # Only now is it clear that response_format, not the request itself, caused the 400.
        self.json_mode_supported = False
        return completion

    def _create(self, kwargs: dict[str, Any], use_format: bool, state: _Attempts) -> Any:
        state.requests += 1
        state.json_mode_sent = use_format
        extra = {"response_format": {"type": "json_object"}} if use_format else {}
        try:
            # kwargs are built at run time; the package's overloads cannot type them
            create: Any = self._client.chat.completions.create
            completion = create(**kwargs, **extra)
        except ValueError as exc:  # a 200 whose body is not JSON (json.JSONDecodeError): a proxy page, say
            raise MalformedCompletion(f"reply body is not JSON ({exc})") from exc
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
            raise MalformedCompletion(f"reply has no choices[0].message: {str(completion)[:200]!r}")
        if use_format:
            self.json_mode_supported = True
        return completion

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        server_says = retry_after_seconds(exc)
        if server_says is not None:
            return min(server_says, self.retry.max_retry_after_s)
        exponent = retry_state.attempt_number - 1
        return min(self.retry.initial_wait_s * (2**exponent), self.retry.max_wait_s)

    def _finish(
        self,
        sent: tuple[dict[str, str], ...],
        completion: Any,
        state: _Attempts,
        temperature: float,
        seed: int | None,
        started_at: float,
        latency_s: float,
        error: LLMError | None,
    ) -> LLMCall:
        prompt_tokens = completion_tokens = 0
        reply = finish_reason = None
        cost: float | None = None
        if completion is not None:
            usage = getattr(completion, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            choice = completion.choices[0]
            reply = choice.message.content or ""
            finish_reason = getattr(choice, "finish_reason", None)
            cost = self._cost(prompt_tokens, completion_tokens, getattr(completion, "model", None))
            if self.budget is not None:
                self.budget.charge(prompt_tokens + completion_tokens, cost)
        with self._lock:
            record = LLMCall(
                index=len(self._records),
                model=self.model,
                messages=sent,
                reply=reply,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_s=latency_s,
                cost_usd=cost,
                attempts=state.requests,
                json_mode=state.json_mode_sent and error is None,
                temperature=temperature,
                seed=seed,
                started_at=started_at,
                finish_reason=finish_reason,
                error=None if error is None else str(error),
                error_kind=None if error is None else type(error).__name__,
            )
            self._records.append(record)
        if self.on_call is not None:
            with self._callback_lock:
                self.on_call(record)
        return record

    def _cost(self, prompt_tokens: int, completion_tokens: int, served_model: str | None) -> float | None:
        price = self.prices.get(self.model) or (self.prices.get(served_model) if served_model else None)
        if price is None:
            return None
        per_input, per_output = price
        return (prompt_tokens * per_input + completion_tokens * per_output) / 1_000_000


def _merge_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Fold every system message into the first user message (or make it one if there is none)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]
