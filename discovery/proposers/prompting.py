"""Render the prompt templates of ``prompts/`` into the ``openai`` proposer's chat messages.

The history shown to the LLM is never the unbounded chat log: it is the best-k scored candidates plus the
most-recent-m candidates (failures included, so the model learns what breaks; ``history``), each clipped to a
fixed size. A repair continues the conversation of the failed attempt only (its prompt, its reply, the
checker's errors), so a prompt's length is bounded by k, m and the clip sizes, whatever the generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from lossforge.discovery.proposers.base import ProposalRequest
from lossforge.discovery.proposers.history import clip, history_from_rows, select_history
from lossforge.discovery.search.ranking import Direction

Message = dict[str, str]


@dataclass(frozen=True)
class TaskBrief:
    """What the system prompt says about the task: its name, what it measures and which way is better."""

    task: str
    description: str
    objective_name: str = "score"
    objective: str = "the task's score of the trained policy"
    direction: Direction = "higher"
    beta: float = 0.1


def task_brief(task: str, beta: float) -> TaskBrief:
    """The ``TaskBrief`` of a task (a registered name or ``"package.module:Class"``), from what its class says."""
    from lossforge.evaluate.tasks import task_class

    cls = task_class(task)
    return TaskBrief(
        task=task,
        description=cls.description or f"Preference optimization on the {cls.name!r} task.",
        objective_name=cls.objective_name,
        objective=cls.objective,
        beta=beta,
    )


def tasks_brief(tasks: Sequence[str], beta: float, *, aggregate: str, baseline: str) -> TaskBrief:
    """The ``TaskBrief`` of a multi-task run: every task's description, and the normalized aggregate as the score
    (``stats.multi_task``); one task gives that task's own brief."""
    if len(tasks) == 1:
        return task_brief(tasks[0], beta)
    briefs = [task_brief(task, beta) for task in tasks]
    described = " ".join(f"({i}) {b.task}: {b.description}" for i, b in enumerate(briefs, start=1))
    combined = "the mean over tasks" if aggregate == "mean" else "the worst task"
    return TaskBrief(
        task=", ".join(tasks),
        description=f"Each loss is trained and scored on {len(tasks)} tasks. {described}",
        objective_name="normalized score",
        objective=(
            f"{combined} of each task's score normalized so that the untrained reference policy scores 0 and "
            f"{baseline} scores 1 (the metric named after each task is its normalized score: "
            f"{'; '.join(f'{b.task}: {b.objective}' for b in briefs)})"
        ),
        beta=beta,
    )


@dataclass(frozen=True)
class PromptSettings:
    """Bounds of the history: ``best_k`` scored plus ``recent_m`` recent candidates, code clipped to chars."""

    best_k: int = 5
    recent_m: int = 5
    max_code_chars: int = 1500
    json_hint: bool = True
    niches_explore: float | None = None  # None: niches off; else the explore share of best-k (``niches``)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The template environment: package data of ``lossforge.prompts``; unknown variables are errors."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lossforge.prompts", "."),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,  # block tags do not leave blank lines behind
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # plain text for an LLM, not HTML
    )
    env.filters["clip"] = clip
    return env


class PromptRenderer:
    """Turns a ``ProposalRequest`` into chat messages through the three templates."""

    def __init__(self, brief: TaskBrief, settings: PromptSettings | None = None) -> None:
        self.brief = brief
        self.settings = settings or PromptSettings()
        self._env = environment()

    def system(self) -> str:
        return self._env.get_template("system.j2").render(
            task=self.brief.task,
            task_description=self.brief.description,
            objective=self.brief.objective,
            direction=self.brief.direction,
            beta=self.brief.beta,
            json_hint=self.settings.json_hint,
        )

    def propose(self, request: ProposalRequest) -> str:
        best, recent = select_history(
            request.history,
            self.settings.best_k,
            self.settings.recent_m,
            direction=self.brief.direction,
            explore=self.settings.niches_explore,
        )
        return self._env.get_template("propose.j2").render(
            generation=request.generation,
            index=request.index,
            best=best,
            recent=recent,
            objective_name=self.brief.objective_name,
            direction=self.brief.direction,
            max_code_chars=self.settings.max_code_chars,
            lessons=request.lessons,
        )

    def lessons(self, facts: str, rows: Sequence[Any], max_chars: int) -> list[Message]:
        """The one-call conversation in which the LLM writes the running lessons
        (``lossforge.discovery.search.lessons``):
        the rule-based facts plus the best-k and most-recent-m candidates of ``rows`` (archive rows)."""
        best, recent = select_history(
            history_from_rows(rows), self.settings.best_k, self.settings.recent_m, direction=self.brief.direction
        )
        text = self._env.get_template("lessons.j2").render(
            facts=facts,
            best=best,
            recent=recent,
            max_chars=max_chars,
            objective_name=self.brief.objective_name,
            direction=self.brief.direction,
            max_code_chars=min(600, self.settings.max_code_chars),
        )
        return [{"role": "system", "content": self.system()}, {"role": "user", "content": text}]

    def repair(self, request: ProposalRequest, max_rounds: int) -> str:
        failed = request.repair_of
        return self._env.get_template("repair.j2").render(
            name=failed.name if failed is not None else "",
            errors=list(request.repair_errors),
            round=request.repair_round,
            max_rounds=max_rounds,
        )

    def messages(self, request: ProposalRequest, *, max_rounds: int) -> list[Message]:
        """The conversation for one request: a fresh proposal, or the failed attempt plus the repair prompt."""
        messages: list[Message] = [
            {"role": "system", "content": self.system()},
            {"role": "user", "content": self.propose(request)},
        ]
        failed = request.repair_of
        if failed is not None:
            # Show the model its own failed reply verbatim (or the code, when the reply was not kept).
            previous = failed.raw if failed.raw else failed.code
            messages.append({"role": "assistant", "content": previous})
            messages.append({"role": "user", "content": self.repair(request, max_rounds)})
        return messages


__all__ = ["Message", "PromptRenderer", "PromptSettings", "TaskBrief", "environment", "task_brief", "tasks_brief"]
