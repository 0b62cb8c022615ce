"""The ``openai`` proposer: an LLM behind any OpenAI-compatible endpoint writes each proposal.

The wire (retries, ``Retry-After``, JSON mode, budget, ``system|merge``) is ``lossforge.evaluate.llm``'s job;
this module turns a ``ProposalRequest`` into messages (``prompting``) and the reply into a ``Proposal``
(``lossforge.evaluate.checking.parse``). The record of the call travels on the proposal (``llm_calls``); the
pipeline archives it with the candidate row, which then points at the call that produced it.

Failure policy, so the loop can tell "try again" from "stop":

- a reply that does not parse, or a call that failed after its retries (rate limits, 5xx, timeouts,
  malformed bodies): a ``Proposal`` with ``parse_error`` set, recorded as a failure; the run goes on;
- ``BudgetExceeded``: re-raised, the loop stops proposing and finishes cleanly;
- a configuration error (unreachable endpoint, bad key, unknown model): re-raised, the run aborts with one
  message. ``preflight()`` finds these before any training is spent.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lossforge.discovery.proposers.base import Proposal, ProposalRequest, ProposerBase
from lossforge.discovery.proposers.prompting import PromptRenderer
from lossforge.evaluate.checking.parse import ParseError, parse_reply
from lossforge.evaluate.llm import Budget, LLMCall, LLMError, RetryPolicy
from lossforge.evaluate.llm.client import LLMClient


class OpenAIProposer(ProposerBase):
    """Proposals from chat completions. Thread-safe: a generation's requests run concurrently."""

    name = "openai"

    def __init__(
        self,
        client: LLMClient,
        renderer: PromptRenderer,
        *,
        repair_rounds: int = 2,
        json_mode: bool = True,
    ) -> None:
        self.client = client
        self.renderer = renderer
        self.repair_rounds = repair_rounds
        self.json_mode = json_mode

    @classmethod
    def from_config(
        cls,
        proposer: Any,
        renderer: PromptRenderer,
        *,
        budget: Budget | None,
        repair_rounds: int,
    ) -> OpenAIProposer:
        """Build from a ``ProposerConfig`` (``lossforge.discovery.config``); the key comes from the environment."""
        prices = {name: (p.input_per_mtok, p.output_per_mtok) for name, p in proposer.prices.items()}
        client = LLMClient(
            proposer.model,
            base_url=proposer.base_url,
            api_key=os.environ.get(proposer.api_key_env) or None,
            api_key_env=proposer.api_key_env,
            timeout_s=proposer.timeout_s,
            retry=RetryPolicy(max_attempts=proposer.max_retries + 1),
            prices=prices,
            budget=budget,
            system_prompt_mode=proposer.system_prompt,
            temperature=proposer.temperature,
        )
        return cls(
            client,
            renderer,
            repair_rounds=repair_rounds,
            json_mode=proposer.json_mode,
        )

    def propose(self, request: ProposalRequest) -> Proposal:
        messages = self.renderer.messages(request, max_rounds=self.repair_rounds)
        try:
            # The seed makes a reproducible endpoint (OpenAI, vLLM) repeat itself for the same slot.
            reply = self.client.chat(messages, json_mode=self.json_mode, seed=request.seed)
        except LLMError as exc:
            if exc.config_error:
                raise
            return Proposal(
                code="",
                proposer=self.name,
                parse_error=f"LLM call failed: {exc}",
                llm_calls=(exc.record,) if exc.record is not None else (),
                extra={"llm_failed": True},
            )
        origin = f"llm:{self.client.model}"
        parents = tuple(request.repair_of.parents) if request.repair_of is not None else ()
        try:
            parsed = parse_reply(reply.text)
        except ParseError as exc:
            # Recorded as a failure with the reply kept (``raw``), so the repair round can show it back.
            return Proposal(
                code="",
                proposer=self.name,
                raw=reply.text,
                parse_error=str(exc),
                parents=parents,
                llm_calls=(reply.record,),
                extra={"origin": origin},
            )
        return Proposal(
            code=parsed.code,
            name=parsed.name,
            thought=parsed.thought,
            parents=parents,
            proposer=self.name,
            raw=reply.text,
            llm_calls=(reply.record,),
            extra={"origin": origin},
        )

    def write_lessons(self, facts: str, rows: Sequence[Any], max_chars: int) -> tuple[str, LLMCall]:
        """The running lessons in the LLM's own words (``lossforge.discovery.search.lessons``): one plain-text call,
        whose record the caller archives. Raises ``LLMError`` (with its record) or ``BudgetExceeded``."""
        messages = self.renderer.lessons(facts, rows, max_chars)
        reply = self.client.chat(messages, json_mode=False, max_tokens=max(64, max_chars // 2))
        return reply.text, reply.record

    def preflight(self) -> None:
        """Fail fast on a bad endpoint, key or model, before any training is spent: ``GET /models``
        (``LLMClient.check_model``).

        Raises ``LLMUnreachable``, ``LLMAuthError`` or ``LLMModelNotFound`` with the fix in the message. A
        server without a model list is not an error: the first chat call will tell.
        """
        self.client.check_model()

    def close(self) -> None:
        self.client.close()
