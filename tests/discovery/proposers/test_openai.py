"""The openai proposer against a real loopback server speaking chat completions, through the real client."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from lossforge.discovery.config_groups import ProposerConfig
from lossforge.discovery.proposers.base import HistoryEntry, ProposalRequest
from lossforge.discovery.proposers.openai import OpenAIProposer
from lossforge.discovery.proposers.prompting import PromptRenderer, TaskBrief
from lossforge.evaluate.llm import Budget, BudgetExceeded, LLMAuthError, LLMModelNotFound, LLMUnreachable

from tests.openai_server import Malformed, OpenAIServer, Reply, openai_server, rate_limited, server_error

__all__ = ["openai_server"]  # the fixture, imported so pytest finds it

CODE = (
    "import torch.nn.functional as F\n\n\n"
    "def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
    "    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)\n"
    "    return -F.logsigmoid(beta * margin)\n"
)
REPLY = json.dumps({"thought": "logistic on the margin", "name": "my_dpo", "code": CODE})
HISTORY = (HistoryEntry(id=1, name="dpo", status="ok", code=CODE, score=0.42, metrics={"kl": 1.5}),)


def _proposer(server: OpenAIServer, *, budget: Budget | None = None, **settings: Any) -> OpenAIProposer:
    config = ProposerConfig(kind="openai", model="fake-model", base_url=server.base_url, max_retries=4, **settings)
    proposer = OpenAIProposer.from_config(
        config, PromptRenderer(TaskBrief("sentiment", "desc")), budget=budget, repair_rounds=2
    )
    # Back off in milliseconds, not seconds: the behaviour under test is the retry, not the wait.
    proposer.client.retry = type(proposer.client.retry)(max_attempts=5, initial_wait_s=0.01, max_wait_s=0.05)
    return proposer


def _request(index: int = 0) -> ProposalRequest:
    return ProposalRequest(generation=1, index=index, seed=1234 + index, history=HISTORY, task="sentiment")


def test_proposal_from_json_reply_records_the_call(openai_server: Callable[..., OpenAIServer]) -> None:
    server = openai_server([REPLY])
    proposal = _proposer(server).propose(_request())
    calls = list(proposal.llm_calls)
    assert proposal.parse_error is None
    assert (proposal.name, proposal.thought, proposal.code.strip()) == (
        "my_dpo",
        "logistic on the margin",
        CODE.strip(),
    )
    assert proposal.raw == REPLY and proposal.proposer == "openai" and proposal.extra["origin"] == "llm:fake-model"
    assert len(proposal.llm_calls) == 1
    (body,) = server.chat_requests
    assert body["response_format"] == {"type": "json_object"} and body["seed"] == 1234
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "### #1 dpo (generation 0) -- ok, score 0.42" in body["messages"][1]["content"]
    (call,) = calls
    assert call.reply == REPLY and call.prompt_tokens > 0 and call.completion_tokens > 0


def test_429_and_500_are_retried_and_recorded(openai_server: Callable[..., OpenAIServer]) -> None:
    server = openai_server([rate_limited(0.01), server_error(500), REPLY])
    proposal = _proposer(server).propose(_request())
    calls = list(proposal.llm_calls)
    assert proposal.parse_error is None and proposal.name == "my_dpo"
    assert len(server.chat_requests) == 3
    assert calls[0].attempts == 3 and calls[0].error is None


def test_slow_reply_times_out_and_is_retried(openai_server: Callable[..., OpenAIServer]) -> None:
    server = openai_server([Reply(REPLY, delay=2.0), REPLY])
    proposal = _proposer(server, timeout_s=0.5).propose(_request())
    assert proposal.parse_error is None
    assert len(server.chat_requests) == 2


def test_failed_call_is_a_recorded_failure_not_an_exception(openai_server: Callable[..., OpenAIServer]) -> None:
    server = openai_server([server_error(500)] * 5)
    proposal = _proposer(server).propose(_request())
    calls = list(proposal.llm_calls)
    assert proposal.code == "" and proposal.extra.get("llm_failed") is True
    assert (
        proposal.parse_error is not None and "LLM call failed" in proposal.parse_error and "500" in proposal.parse_error
    )
    assert calls[0].error is not None and len(proposal.llm_calls) == 1


def test_malformed_body_is_retried(openai_server: Callable[..., OpenAIServer]) -> None:
    server = openai_server([Malformed(), REPLY])
    assert _proposer(server).propose(_request()).parse_error is None


def test_malformed_json_reply_is_a_parse_error_with_the_raw_text(openai_server: Callable[..., OpenAIServer]) -> None:
    broken = '{"thought": "x", "name": "half", "code": "def loss(a, b'
    server = openai_server([broken])
    proposal = _proposer(server).propose(_request())
    assert proposal.parse_error and proposal.raw == broken and len(proposal.llm_calls) == 1


def test_prose_around_the_json_is_tolerated(openai_server: Callable[..., OpenAIServer]) -> None:
    server = openai_server([f"Sure! Here is my idea:\n```json\n{REPLY}\n```\nHope it helps."])
    proposal = _proposer(server).propose(_request())
    assert proposal.parse_error is None and proposal.name == "my_dpo"


def test_merge_mode_and_json_mode_fallback(openai_server: Callable[..., OpenAIServer]) -> None:
    server = openai_server([REPLY], reject_response_format=True)
    proposal = _proposer(server, system_prompt="merge").propose(_request())
    assert proposal.parse_error is None
    body = server.chat_requests[-1]
    assert "response_format" not in body
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"].startswith("You are a machine-learning researcher")


def test_budget_exceeded_propagates(openai_server: Callable[..., OpenAIServer]) -> None:
    server = openai_server([REPLY, REPLY])
    proposer = _proposer(server, budget=Budget(max_calls=1))
    proposer.propose(_request())
    with pytest.raises(BudgetExceeded):
        proposer.propose(_request(1))
    assert len(server.chat_requests) == 1  # refused before sending


def test_concurrent_proposals_are_in_flight_together(openai_server: Callable[..., OpenAIServer]) -> None:
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(body: dict[str, Any]) -> Reply:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        threading.Event().wait(0.3)
        with lock:
            state["now"] -= 1
        return Reply(REPLY)

    server = openai_server([slow] * 3)
    proposer = _proposer(server)
    threads = [threading.Thread(target=proposer.propose, args=(_request(i),)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert state["max"] == 3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_preflight_names_each_bad_input(
    openai_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    unreachable = OpenAIProposer.from_config(
        ProposerConfig(kind="openai", model="m", base_url=f"http://127.0.0.1:{_closed_port()}/v1"),
        PromptRenderer(TaskBrief("sentiment", "d")),
        budget=None,
        repair_rounds=0,
    )
    with pytest.raises(LLMUnreachable, match="could not reach http://127.0.0.1:.*check --base-url"):
        unreachable.preflight()
    keyed = openai_server([], api_key="sk-right")
    with pytest.raises(LLMAuthError, match="rejected the API key"):
        _proposer(keyed).preflight()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
    _proposer(keyed).preflight()  # the right key passes
    served = openai_server([], models=["llama3:latest", "other"])
    with pytest.raises(LLMModelNotFound, match="'fake-model' is not served .* llama3:latest, other"):
        _proposer(served).preflight()
