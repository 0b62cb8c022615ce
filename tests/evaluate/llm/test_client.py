"""LLMClient against a real loopback HTTP server through the real openai client."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from lossforge.evaluate.llm import (
    Budget,
    BudgetExceeded,
    LLMAuthError,
    LLMBadResponse,
    LLMCall,
    LLMClient,
    LLMModelNotFound,
    LLMRequestError,
    LLMServerError,
    LLMTimeout,
    LLMUnreachable,
    RetryPolicy,
)

from tests.openai_server import Error, Malformed, OpenAIServer, Reply, openai_server, rate_limited, server_error

__all__ = ["openai_server"]  # the fixture, imported so pytest finds it

USER = [{"role": "user", "content": "propose a loss"}]
FAST = RetryPolicy(max_attempts=3, initial_wait_s=0.0)


def make_client(server: OpenAIServer, **kwargs: Any) -> LLMClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("api_key", "sk-test")
    return LLMClient(kwargs.pop("model", "fake-model"), base_url=server.base_url, **kwargs)


def test_reply_record_cost_and_request_body(openai_server: Any) -> None:
    server = openai_server([Reply('{"name": "x"}', prompt_tokens=1000, completion_tokens=500, model="fake-model-0601")])
    seen: list[LLMCall] = []
    client = make_client(server, prices={"fake-model": (2.0, 8.0)}, on_call=seen.append)
    reply = client.chat(USER, temperature=0.3, seed=7)
    assert reply.text == '{"name": "x"}'
    record = reply.record
    assert seen == [record]
    assert (record.prompt_tokens, record.completion_tokens, record.attempts) == (1000, 500, 1)
    assert record.cost_usd == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert record.json_mode and record.error is None and record.latency_s > 0
    assert record.messages == tuple(USER)
    body = server.chat_requests[0]
    assert body["model"] == "fake-model" and body["messages"] == USER
    assert body["response_format"] == {"type": "json_object"}
    assert (body["temperature"], body["seed"]) == (0.3, 7)
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"
    assert client.usage()["cost_usd"] == pytest.approx(0.006)


def test_json_mode_off_sends_no_response_format(openai_server: Any) -> None:
    server = openai_server(["plain"])
    client = make_client(server)
    assert client.chat(USER, json_mode=False).record.json_mode is False
    assert "response_format" not in server.chat_requests[0]


def test_response_format_rejected_once_then_remembered(openai_server: Any) -> None:
    server = openai_server(["first", "second"], reject_response_format=True)
    client = make_client(server)
    first = client.chat(USER)
    second = client.chat(USER)
    assert (first.text, first.record.attempts, first.record.json_mode) == ("first", 2, False)
    assert (second.text, second.record.attempts) == ("second", 1)
    assert client.json_mode_supported is False
    assert ["response_format" in body for body in server.chat_requests] == [True, False, False]


def test_backoff_honours_retry_after_then_exponential(openai_server: Any) -> None:
    server = openai_server([rate_limited(7), server_error(502), "ok"])
    client = make_client(server, retry=RetryPolicy(max_attempts=3, initial_wait_s=0.5, max_wait_s=60))
    waits: list[float] = []
    client._sleep = waits.append
    reply = client.chat(USER)
    # attempt 1 -> 429 with Retry-After: 7 (the server's word wins); attempt 2 -> 502: 0.5 * 2**1.
    assert waits == [7.0, 1.0]
    assert (reply.text, reply.record.attempts) == ("ok", 3)


def test_retry_after_is_capped(openai_server: Any) -> None:
    server = openai_server([rate_limited(3600), "ok"])
    client = make_client(server, retry=RetryPolicy(max_attempts=2, initial_wait_s=0, max_retry_after_s=30))
    waits: list[float] = []
    client._sleep = waits.append
    assert client.chat(USER).text == "ok"
    assert waits == [30]


def test_retries_exhausted_is_recorded_and_raised(openai_server: Any) -> None:
    server = openai_server([server_error(), rate_limited(0), server_error(503)])
    seen: list[LLMCall] = []
    client = make_client(server, on_call=seen.append)
    with pytest.raises(LLMServerError, match=r"kept failing after 3 attempt\(s\): HTTP 503"):
        client.chat(USER)
    assert len(server.chat_requests) == 3
    assert seen[0].error_kind == "LLMServerError" and seen[0].reply is None and seen[0].attempts == 3
    assert client.usage()["failed_calls"] == 1


def test_timeout_is_retried_then_reported(openai_server: Any) -> None:
    server = openai_server([Reply("late", delay=1.0), Reply("late", delay=1.0)])
    client = make_client(server, timeout_s=0.2, retry=RetryPolicy(max_attempts=2, initial_wait_s=0))
    with pytest.raises(LLMTimeout, match=r"no reply from .* within 0.2 s after 2 attempt\(s\)"):
        client.chat(USER)


def test_timeout_then_success(openai_server: Any) -> None:
    server = openai_server([Reply("late", delay=1.0), "on time"])
    client = make_client(server, timeout_s=0.3)
    reply = client.chat(USER)
    assert (reply.text, reply.record.attempts) == ("on time", 2)


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    client = LLMClient("m", base_url=url, retry=RetryPolicy(max_attempts=2, initial_wait_s=0))
    with pytest.raises(LLMUnreachable) as info:
        client.chat(USER)
    assert str(info.value) == f"could not reach {url} : connection refused; is the server running? check --base-url"
    assert info.value.config_error and client.calls[0].attempts == 2


def test_wrong_api_key_is_not_retried(openai_server: Any) -> None:
    server = openai_server(["never"], api_key="sk-right")
    client = make_client(server, api_key="sk-wrong")
    with pytest.raises(LLMAuthError, match=r"rejected the API key .*check the key in \$OPENAI_API_KEY"):
        client.chat(USER)
    assert len(server.requests) == 1 and server.remaining == 1


def test_unknown_model_is_not_retried(openai_server: Any) -> None:
    server = openai_server(["never"], models=["llama3.1:8b"])
    client = make_client(server, model="gpt-5-nano")
    with pytest.raises(LLMModelNotFound, match=r"model 'gpt-5-nano' not found at .*check the model name"):
        client.chat(USER)
    assert len(server.requests) == 1


def test_other_4xx_is_not_retried(openai_server: Any) -> None:
    server = openai_server([Error(400, "maximum context length is 8192 tokens"), "never"])
    client = make_client(server)
    with pytest.raises(LLMRequestError, match="HTTP 400: maximum context length"):
        client.chat(USER, json_mode=False)
    assert len(server.chat_requests) == 1


def test_malformed_body_is_retried(openai_server: Any) -> None:
    server = openai_server([Malformed(), Malformed('{"object": "chat.completion"}'), "good"])
    reply = make_client(server).chat(USER)
    assert (reply.text, reply.record.attempts) == ("good", 3)


def test_malformed_every_time_raises_bad_response(openai_server: Any) -> None:
    server = openai_server([Malformed(), Malformed()])
    client = make_client(server, retry=RetryPolicy(max_attempts=2, initial_wait_s=0))
    with pytest.raises(LLMBadResponse, match="did not answer with a chat completion after 2"):
        client.chat(USER)


def test_budget_stops_before_sending(openai_server: Any) -> None:
    server = openai_server([Reply("a", 10, 5), Reply("b", 10, 5), "never"])
    budget = Budget(max_calls=2)
    client = make_client(server, budget=budget)
    client.chat(USER)
    client.chat(USER)
    with pytest.raises(BudgetExceeded, match="2 of max_calls=2 calls used"):
        client.chat(USER)
    assert len(server.chat_requests) == 2 and len(client.calls) == 2
    assert budget.snapshot()["tokens"] == 30


def test_token_and_cost_caps(openai_server: Any) -> None:
    server = openai_server([Reply("a", 600, 500), "never"])
    client = make_client(server, budget=Budget(max_tokens=1000))
    client.chat(USER)
    with pytest.raises(BudgetExceeded, match="1100 of max_tokens=1000"):
        client.chat(USER)
    server2 = openai_server([Reply("a", 1_000_000, 0), "never"])
    budget = Budget(max_cost_usd=1.0, cost_usd=0.5)  # a resumed run that already spent half
    client2 = make_client(server2, budget=budget, prices={"fake-model": (0.5, 1.0)})
    client2.chat(USER)
    with pytest.raises(BudgetExceeded, match="max_cost_usd"):
        client2.chat(USER)


def test_cost_cap_needs_a_price() -> None:
    with pytest.raises(ValueError, match="needs a price for model 'm'"):
        LLMClient("m", base_url="http://127.0.0.1:9/v1", budget=Budget(max_cost_usd=1.0))


def test_concurrent_calls_share_budget_exactly(openai_server: Any) -> None:
    server = openai_server(default=Reply("r", 3, 2))
    budget = Budget(max_calls=5)
    recorded: list[int] = []
    inside = threading.Lock()

    def on_call(record: LLMCall) -> None:
        # The client serializes on_call (the loop writes SQLite from it): a second caller never gets in.
        assert inside.acquire(blocking=False), "on_call entered concurrently"
        time.sleep(0.01)
        recorded.append(record.index)
        inside.release()

    client = make_client(server, budget=budget, on_call=on_call)

    def one(_: int) -> str:
        try:
            return client.chat(USER).text
        except BudgetExceeded:
            return "budget"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(one, range(12)))
    assert outcomes.count("r") == 5 and outcomes.count("budget") == 7
    assert sorted(recorded) == [0, 1, 2, 3, 4]
    assert len(server.chat_requests) == 5
    assert budget.snapshot()["tokens"] == 25 and client.usage()["completion_tokens"] == 10


def test_merge_mode_folds_system_into_first_user(openai_server: Any) -> None:
    server = openai_server(["ok", "ok"])
    client = make_client(server, system_prompt_mode="merge")
    client.chat([{"role": "system", "content": "You write losses."}, *USER])
    client.chat([{"role": "system", "content": "only system"}])
    first, second = server.chat_requests
    assert first["messages"] == [{"role": "user", "content": "You write losses.\n\npropose a loss"}]
    assert second["messages"] == [{"role": "user", "content": "only system"}]


def test_environment_configures_endpoint(openai_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = openai_server(["from env"], api_key="sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert LLMClient("fake-model", retry=FAST).chat(USER).text == "from env"


def test_local_server_needs_no_key(openai_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = openai_server(["ok"])
    assert LLMClient("llama3", base_url=server.base_url).chat(USER).text == "ok"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMAuthError, match="no API key for https://api.openai.com/v1"):
        LLMClient("gpt-4o-mini")


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "at least one"),
        ([{"role": "tool", "content": "x"}], "message 0 must be"),
        ([{"role": "user"}], "message 0"),
    ],
)
def test_bad_messages_are_rejected_before_sending(messages: list[dict[str, str]], match: str) -> None:
    client = LLMClient("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match=match):
        client.chat(messages)
    assert client.calls == []


def test_fake_server_lists_models(openai_server: Any) -> None:
    import openai

    server = openai_server(models=["a", "b"])
    listed = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0).models.list()
    assert [m.id for m in listed.data] == ["a", "b"]


def test_check_model_lists_the_models_with_the_chat_key(openai_server: Any) -> None:
    server = openai_server(models=["llama3:latest", "other"], api_key="sk-test")
    make_client(server, model="llama3").check_model()  # Ollama's tag suffix names the same model
    (listing,) = server.requests
    assert (listing.method, listing.path, listing.headers["authorization"]) == ("GET", "/v1/models", "Bearer sk-test")
    with pytest.raises(LLMModelNotFound, match=r"'llama3\.1' is not served at .*\(it serves: llama3:latest, other\)"):
        make_client(server, model="llama3.1").check_model()
    wrong = make_client(server, api_key="sk-wrong")
    with pytest.raises(LLMAuthError, match=r"rejected the API key \(HTTP 401: .*proposer\.api_key_env"):
        wrong.check_model()
    assert wrong.calls == [] and server.chat_requests == []  # a check, not a chat call
