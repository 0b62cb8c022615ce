"""Prompt rendering: bounded history, exact repair text, message structure."""

from __future__ import annotations

import pytest
from lossforge.discovery.proposers.base import HistoryEntry, Proposal, ProposalRequest
from lossforge.discovery.proposers.history import history_from_rows, profile_notes, select_history
from lossforge.discovery.proposers.prompting import PromptRenderer, PromptSettings, TaskBrief, task_brief

from tests.tiny_task import TinyTask

BRIEF = TaskBrief(task="sentiment", description="Write positive reviews.", objective_name="reward", beta=0.05)


def _entry(i: int, status: str = "ok", score: float | None = None, **kw: object) -> HistoryEntry:
    return HistoryEntry(id=i, name=f"cand{i}", status=status, code=f"# code {i}", score=score, **kw)  # type: ignore[arg-type]


def test_select_history_is_bounded_disjoint_and_ordered() -> None:
    entries = [_entry(i, score=float(i % 7)) for i in range(1, 30)]
    entries += [_entry(30, status="rejected", reason="bad shape"), _entry(31, status="duplicate")]
    best, recent = select_history(entries, best_k=3, recent_m=4)
    assert [e.score for e in best] == [6.0, 6.0, 6.0]
    assert [e.id for e in best] == [6, 13, 20]  # ties broken by the older id
    assert [e.id for e in recent] == [31, 30, 29, 28]  # newest first, failures included
    assert not {e.id for e in best} & {e.id for e in recent}


def test_select_history_lower_is_better_and_ignores_unscored() -> None:
    entries = [_entry(1, score=0.3), _entry(2, score=0.1), _entry(3, status="failed", score=0.0), _entry(4, score=None)]
    best, recent = select_history(entries, best_k=1, recent_m=10, direction="lower")
    assert [e.id for e in best] == [2]
    assert [e.id for e in recent] == [4, 3, 1]


def test_propose_prompt_carries_scores_metrics_and_failures_but_stays_bounded() -> None:
    history = tuple(_entry(i, score=0.01 * i, metrics={"kl": 0.5 + i}) for i in range(1, 200))
    history += (_entry(200, status="rejected", reason="returned shape (1,), expected (8,)"),)
    renderer = PromptRenderer(BRIEF, PromptSettings(best_k=2, recent_m=2))
    text = renderer.propose(ProposalRequest(generation=3, index=1, seed=0, history=history, task="sentiment"))
    assert text.startswith("Generation 3, proposal 2.")
    assert "### #199 cand199 (generation 0) -- ok, reward 1.99" in text
    assert "Metrics: kl=199.5" in text
    assert "Failure: returned shape (1,), expected (8,)" in text
    assert text.count("### #") == 4  # best 2 + recent 2, out of 200
    assert "cand150" not in text


def test_long_code_is_clipped() -> None:
    long = HistoryEntry(id=1, name="long", status="ok", code="x = 1\n" * 1000, score=1.0)
    renderer = PromptRenderer(BRIEF, PromptSettings(max_code_chars=200))
    text = renderer.propose(ProposalRequest(1, 0, 0, (long,), "sentiment"))
    assert "# ... (truncated)" in text
    assert len(text) < 1000


def test_system_prompt_states_task_contract_and_direction() -> None:
    text = PromptRenderer(BRIEF).system()
    assert "Task: sentiment. Write positive reviews." in text
    assert "(higher is better)" in text
    assert "def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps" in text
    assert "0.05 in this run" in text
    assert '{"thought":' in text


def test_repair_prompt_exact_text() -> None:
    failed = Proposal(code="import os", name="leaky", raw='{"code": "import os"}')
    request = ProposalRequest(
        generation=1,
        index=0,
        seed=0,
        history=(),
        task="sentiment",
        repair_of=failed,
        repair_errors=("import of 'os' is not allowed; allowed: torch, torch.nn.functional, math",),
        repair_round=1,
    )
    assert PromptRenderer(BRIEF).repair(request, max_rounds=2) == (
        "Your candidate `leaky` was rejected before training (repair round 1 of 2).\n\n"
        "The checker reported:\n"
        "- import of 'os' is not allowed; allowed: torch, torch.nn.functional, math\n\n"
        "Fix these problems and keep the idea if you can. "
        "Reply with the complete corrected candidate as the JSON object only."
    )


def test_repair_messages_continue_the_failed_conversation() -> None:
    failed = Proposal(code="x", name="n", raw="Sure! {...}")
    request = ProposalRequest(1, 0, 0, (), "sentiment", repair_of=failed, repair_errors=("e1",), repair_round=2)
    messages = PromptRenderer(BRIEF).messages(request, max_rounds=2)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "Sure! {...}"
    assert "- e1" in messages[3]["content"] and "round 2 of 2" in messages[3]["content"]
    fresh = PromptRenderer(BRIEF).messages(ProposalRequest(1, 0, 0, (), "sentiment"), max_rounds=2)
    assert [m["role"] for m in fresh] == ["system", "user"]


def test_profile_notes_and_rows_adapter() -> None:
    notes = profile_notes({"rho_only": True, "batch_coupled": False, "stable_extremes": False, "notes": ["saturates"]})
    assert notes == "saturates; depends on the margin only; unstable at extreme margins"
    rows = [
        {
            "id": 4,
            "name": "a",
            "status": "ok",
            "code": "c",
            "score": 1.5,
            "metrics": {"kl": 2, "tag": "x"},
            "profile": {"convex": True},
            "generation": 2,
        }
    ]
    (entry,) = history_from_rows(rows)
    assert entry.metrics == {"kl": 2.0} and entry.profile_notes == "convex in the margin" and entry.generation == 2


class DescribedTask(TinyTask):
    """A user's own task, passed as ``tests.discovery.proposers.test_prompting:DescribedTask``: its prompt text is
    its own."""

    name = "described"
    description = "Summaries of weather reports are preferred when they are short."
    objective_name = "brevity"
    objective = "the mean reciprocal length of sampled summaries"


def test_the_prompt_describes_the_task_from_the_task_class() -> None:
    builtin = task_brief("sentiment", 0.1)
    assert builtin.objective_name == "reward" and "movie reviews" in builtin.description
    user = task_brief("tests.discovery.proposers.test_prompting:DescribedTask", 0.05)
    assert (user.description, user.objective_name, user.objective) == (
        DescribedTask.description,
        "brevity",
        DescribedTask.objective,
    )
    system = PromptRenderer(user).system()
    assert DescribedTask.description in system and DescribedTask.objective in system
    undescribed = task_brief("tests.tiny_task:TinyTask", 0.1)
    assert undescribed.description == "Preference optimization on the 'tiny' task."


def test_a_run_config_accepts_a_user_task_class_and_refuses_a_missing_one() -> None:
    from lossforge.discovery.config import load_config
    from lossforge.evaluate.config_error import ConfigError

    config = load_config(None, {"training.task": "tests.discovery.proposers.test_prompting:DescribedTask"})
    assert config.training.task == "tests.discovery.proposers.test_prompting:DescribedTask"
    with pytest.raises(ConfigError, match="cannot load task class 'tests.nowhere:Gone'"):
        load_config(None, {"training.task": "tests.nowhere:Gone"})
