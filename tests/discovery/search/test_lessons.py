"""Running lessons (issue 11, item 4): rule-based from profiles and scores, bounded, archived, written by
the LLM in one archived and budgeted call for LLM runs, and shown in the next prompt (also after resume)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lossforge.candidates import load_builtin
from lossforge.discovery.loop import run_discovery
from lossforge.discovery.search.lessons import lessons_for, refresh_generation, rule_lessons
from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.checking.profile import compute_profile

from tests.openai_server import Error, OpenAIServer, openai_server
from tests.scripted_llm import llm_run_config

__all__ = ["openai_server"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"task": "tests.tiny_task:TinyTask", "steps": 1, "eval_samples": 4}
LESSON = "Margin-only convex losses did best; importing os is refused by the static policy."
BROKEN = json.dumps(
    {"thought": "t", "name": "leaky", "code": "import os\n\ndef loss(a, b, c, d, beta):\n    return a\n"}
)


def _archive_with_library_rows(tmp_path: Path) -> Archive:
    archive = Archive.open(tmp_path / "run")
    scores = {"dpo": 0.30, "ipo": 0.20, "exo_pair": 0.10, "apo_zero": 0.12}
    for index, (name, score) in enumerate(scores.items()):
        profile = compute_profile(load_builtin(name).fn).to_dict()
        archive.add_candidate(generation=0, idx=index, name=name, status="ok", score=score, profile=profile)
    archive.add_candidate(generation=1, idx=0, name="leaky", status="rejected", stage="static", reason="import os")
    archive.add_candidate(generation=1, idx=1, name="dpo2", status="duplicate", stage="dedup", reason="same")
    return archive


def test_rule_lessons_compare_traits_by_score_and_stay_bounded(tmp_path: Path) -> None:
    with _archive_with_library_rows(tmp_path) as archive:
        rows = archive.candidates()
        text = rule_lessons(rows, 600)
        assert text.startswith("Best so far: #1 dpo (0.3).")
        # exo_pair and apo_zero are the bounded ones: 0.11 mean vs 0.25 for dpo and ipo.
        assert "bounded losses scored worse than unbounded ones: 0.11 vs 0.25 mean (n=2 vs 2)." in text
        assert "1 of 2 proposals were rejected (1 at the static stage)." in text
        assert "1 were duplicates" in text
        assert len(text) <= 600
        short = rule_lessons(rows, 120)
        assert len(short) <= 120 and short.startswith("Best so far")
        # Lower is better flips the verdict.
        assert "bounded losses scored better than unbounded ones" in rule_lessons(rows, 600, "lower")


def test_lessons_refresh_every_n_generations_and_are_archived(tmp_path: Path) -> None:
    assert [refresh_generation(g, 2) for g in (1, 2, 3, 4, 5)] == [1, 1, 3, 3, 5]
    with _archive_with_library_rows(tmp_path) as archive:
        assert lessons_for(archive, 1, every=0, max_chars=600) == ""
        first = lessons_for(archive, 2, every=2, max_chars=600)  # shows generation 1's refresh
        assert archive.get_meta("lessons/g1") == {"text": first, "source": "rules", "call_id": None}
        assert "1 of 2 proposals" not in first  # generation 1 sees generation 0 only
        third = lessons_for(archive, 3, every=2, max_chars=600)
        assert "1 of 2 proposals were rejected" in third and archive.get_meta("lessons/g3")["text"] == third


def _script(body: dict[str, Any]) -> str:
    text = body["messages"][-1]["content"]
    return LESSON if "write the running lessons" in text else BROKEN


def _proposal_prompts(server: OpenAIServer) -> dict[int, str]:
    prompts = {}
    for body in server.chat_requests:
        text = body["messages"][1]["content"]
        if found := re.match(r"Generation (\d+), proposal", text):
            prompts[int(found.group(1))] = text
    return prompts


def test_an_llm_run_writes_archives_and_shows_its_lessons_and_resume_keeps_them(
    tmp_path: Path, openai_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server = openai_server([], default=_script, api_key="sk-test")
    search = {"generations": 2, "population": 1, "repair_rounds": 0, "seed_candidates": ["dpo"], "lessons_every": 2}
    config = llm_run_config(tmp_path, server, search=search, training=TINY)
    summary = run_discovery(config, tmp_path / "run", progress=False)
    prompts = _proposal_prompts(server)
    lesson_calls = [b for b in server.chat_requests if "write the running lessons" in b["messages"][-1]["content"]]
    assert len(lesson_calls) == 1  # generation 1 refreshes; generation 2 shows the same text again
    assert "Best so far: #1 dpo" in lesson_calls[0]["messages"][-1]["content"]  # the rule-based facts
    assert LESSON in prompts[1] and LESSON in prompts[2]
    assert summary.llm["calls"] == 3  # one lessons call + two proposals, all in the budget's count
    with Archive.open(tmp_path / "run") as archive:
        stored = archive.get_meta("lessons/g1")
        assert stored["source"] == "llm" and stored["text"] == LESSON
        assert archive.llm_call(stored["call_id"])["reply"] == LESSON
        assert archive.get_meta("lessons/g2") is None

    # Resumed with one more generation: generation 3 refreshes (once); 1 and 2 are never asked again.
    more = llm_run_config(tmp_path, server, search={**search, "generations": 3}, training=TINY)
    before = len(server.chat_requests)
    run_discovery(more, tmp_path / "run", resume=True, progress=False)
    new = server.chat_requests[before:]
    assert ["write the running lessons" in b["messages"][-1]["content"] for b in new] == [True, False]
    assert "2 of 2 proposals were rejected (2 at the static stage)." in new[0]["messages"][-1]["content"]
    assert LESSON in new[1]["messages"][1]["content"]


def test_the_lessons_call_counts_against_the_budget(
    tmp_path: Path, openai_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server = openai_server([], default=_script, api_key="sk-test")
    search = {"generations": 1, "population": 1, "repair_rounds": 0, "seed_candidates": ["dpo"], "lessons_every": 1}
    config = llm_run_config(tmp_path, server, search=search, training=TINY, budget={"max_llm_calls": 1})
    summary = run_discovery(config, tmp_path / "run", progress=False)
    assert summary.llm["calls"] == 1 and summary.status == "budget"  # the lessons call took the only one
    with Archive.open(tmp_path / "run") as archive:
        assert archive.get_meta("lessons/g1")["source"] == "llm"
        assert not archive.candidates(generation=1)


def test_a_failed_lessons_call_falls_back_to_the_rules_and_is_archived(
    tmp_path: Path, openai_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def script(body: dict[str, Any]) -> Any:
        return (
            Error(400, "context too long") if "write the running lessons" in body["messages"][-1]["content"] else BROKEN
        )

    server = openai_server([], default=script, api_key="sk-test")
    search = {"generations": 1, "population": 1, "repair_rounds": 0, "seed_candidates": ["dpo"], "lessons_every": 1}
    run_discovery(llm_run_config(tmp_path, server, search=search, training=TINY), tmp_path / "run", progress=False)
    with Archive.open(tmp_path / "run") as archive:
        stored = archive.get_meta("lessons/g1")
        assert stored["source"].startswith("rules (the LLM call failed: ") and "context too long" in stored["source"]
        assert stored["text"].startswith("Best so far: #1 dpo") and archive.llm_call(stored["call_id"])["error"]
    assert stored["text"] in _proposal_prompts(server)[1]
