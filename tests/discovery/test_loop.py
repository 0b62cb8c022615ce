"""Full discovery runs against a loopback OpenAI-compatible server: 2 generations x 2 proposals, real checks
and real (smoke-budget) training, with injected 429s, 500s, slow replies, malformed bodies and JSON, prose
around the JSON, invalid code, an equivalent rewrite of a seed, and an LLM budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lossforge.candidates import read_metadata
from lossforge.discovery.config import build_config
from lossforge.discovery.loop import LoopError, run_discovery
from lossforge.discovery.storage.archive import Archive

from tests.openai_server import Malformed, OpenAIServer, Reply, openai_server, rate_limited, server_error
from tests.scripted_llm import (
    DPO_REWRITE,
    LEAKY,
    MIXED,
    SHIFTED,
    SQUARED,
    TRAINING,
    ScriptBySlot,
    llm_run_config,
    reply,
    slot,
)

__all__ = ["openai_server"]  # the fixture, imported so pytest finds it


def test_full_run_survives_every_injected_fault(
    tmp_path: Path, openai_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    script = ScriptBySlot(
        {
            (1, 0, 0): [rate_limited(0.01), reply("shifted", SHIFTED)],
            (1, 1, 0): [server_error(500), reply("leaky", LEAKY)],
            (1, 1, 1): [Reply(reply("squared", SQUARED), delay=2.5), reply("squared", SQUARED)],
            (2, 0, 0): [f"Here is a new loss.\n```json\n{reply('dpo_again', DPO_REWRITE)}\n```\nEnjoy!"],
            (2, 1, 0): [Malformed(), '{"thought": "t", "name": "cut", "code": "def loss(a, b'],
            (2, 1, 1): [reply("mixed", MIXED)],
        }
    )
    server = openai_server([], default=script, api_key="sk-test")
    summary = run_discovery(llm_run_config(tmp_path, server), tmp_path / "run", progress=False)

    assert summary.status == "finished" and summary.generations == 2
    with Archive.open(tmp_path / "run") as archive:
        rows = {row.proposal_key: row for row in archive.candidates()}
        seeds = {row.name: row for row in archive.candidates(generation=0)}
        assert set(seeds) == {"dpo", "hinge", "ipo", "kto_pair"}
        assert all(row.status == "ok" and row.score is not None for row in seeds.values())

        # 429 and slow replies were retried; the proposal went through and was trained.
        assert rows["g1-i0-r0"].status == "ok" and rows["g1-i0-r0"].name == "shifted"
        # Invalid code: rejected by the static policy with a recorded reason; the repair carried it.
        leaky = rows["g1-i1-r0"]
        assert (leaky.status, leaky.stage) == ("rejected", "static") and "`os`" in (leaky.reason or "")
        repair_prompt = [b for b in server.chat_requests if slot(b) == (1, 1, 1)][-1]["messages"][-1]["content"]
        assert leaky.reason in repair_prompt and "repair round 1 of 2" in repair_prompt
        assert rows["g1-i1-r1"].status == "ok" and rows["g1-i1-r1"].name == "squared"
        # An equivalent rewrite of DPO (prose around the JSON) is a duplicate, never trained.
        dup = rows["g2-i0-r0"]
        assert dup.status == "duplicate" and f"#{seeds['dpo'].id} (dpo)" in (dup.reason or "")
        assert "train_start" not in dup.timings and dup.score is None
        # Malformed body retried; malformed JSON is a parse failure, repaired in the next round.
        cut = rows["g2-i1-r0"]
        assert (cut.status, cut.stage) == ("rejected", "parse") and cut.reason
        assert rows["g2-i1-r1"].status == "ok"

        # Every LLM call is archived, with the reply the row came from.
        calls, tokens, _ = archive.llm_totals()
        assert calls == 6 and tokens > 0
        for key in ("g1-i0-r0", "g1-i1-r0", "g2-i0-r0"):
            call = archive.llm_call(rows[key].prompt_id)  # type: ignore[arg-type]
            assert call is not None and rows[key].name in call["reply"]
        assert archive.get_meta("config")["search"]["population"] == 2
        # Each candidate's code is a contract-format file.
        path = archive.code_path(rows["g1-i0-r0"].id)
        assert path is not None and read_metadata(path.read_text())["NAME"] == "shifted"

    # The proposals of a generation were requested concurrently.
    first = {key: times[0] for key, times in script.arrivals.items()}
    assert abs(first[(1, 0, 0)] - first[(1, 1, 0)]) < 0.5
    # The first prompt carries measured seed scores.
    first_prompt = server.chat_requests[0]["messages"][1]["content"]
    assert f"{seeds['dpo'].score:.4g}" in first_prompt
    assert summary.counts == {"ok": 7, "rejected": 2, "duplicate": 1}
    assert summary.llm["calls"] == 6


def test_budget_ends_the_run_cleanly(
    tmp_path: Path, openai_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server = openai_server(
        [], default=ScriptBySlot({(1, 0, 0): [reply("shifted", SHIFTED)], (1, 1, 0): [reply("shifted", SHIFTED)]})
    )
    config = llm_run_config(tmp_path, server, budget={"max_llm_calls": 1})
    summary = run_discovery(config, tmp_path / "run", progress=False)
    assert summary.status == "budget" and "max_calls=1" in (summary.stop_reason or "")
    assert len(server.chat_requests) == 1 and summary.llm["calls"] == 1
    with Archive.open(tmp_path / "run") as archive:
        assert not archive.candidates(status="pending")  # nothing left half-done
        assert len(archive.candidates(generation=1)) == 1 and not archive.candidates(generation=2)
        assert archive.get_meta("state")["status"] == "budget"


def test_unreachable_endpoint_fails_before_any_training(tmp_path: Path) -> None:
    config = build_config(
        {"proposer": {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}, "training": TRAINING}
    )
    with pytest.raises(LoopError, match="could not reach http://127.0.0.1:9/v1"):
        run_discovery(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "archive.sqlite").exists()  # the same --out can be used once fixed
