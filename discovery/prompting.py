"""Render the prompt templates of ``prompts/`` into chat messages, with a bounded history.

The history shown to the LLM is never the unbounded chat log: it is the best-k scored candidates plus the
most-recent-m candidates (failures included, so the model learns what breaks), each clipped to a fixed size.
A repair continues the conversation of the failed attempt only (its prompt, its reply, the checker's errors),
so a prompt's length is bounded by k, m and the clip sizes, whatever the generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from lossforge.discovery.proposers.base import HistoryEntry, ProposalRequest
from lossforge.discovery.search.niches import niche_key, select_across_niches
from lossforge.discovery.search.ranking import Direction, best_first

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


@dataclass(frozen=True)
class PromptSettings:
    """Bounds of the history: ``best_k`` scored plus ``recent_m`` recent candidates, code clipped to chars."""

    best_k: int = 5
    recent_m: int = 5
    max_code_chars: int = 1500
    json_hint: bool = True
    niches_explore: float | None = None  # None: niches off; else the explore share of best-k (``niches``)


def _clip(text: Any, limit: int) -> str:
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    # Keep the head: a loss's signature and first lines say more than its tail.
    return text[: max(0, limit - 20)].rstrip() + "\n# ... (truncated)"


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
    env.filters["clip"] = _clip
    return env


def select_history(
    entries: Iterable[HistoryEntry],
    best_k: int,
    recent_m: int,
    *,
    direction: Direction = "higher",
    explore: float | None = None,
) -> tuple[tuple[HistoryEntry, ...], tuple[HistoryEntry, ...]]:
    """Split archived candidates into (best-k scored, most-recent-m others), disjoint and bounded.

    Best: status ``ok`` with a finite score, ordered best first (ties: older id first, so it is stable); with
    ``explore`` (niches on) a mix of the global best and other niches' elites (``niches.select_across_niches``).
    Recent: the newest ``recent_m`` of the rest by id, newest first; failures and duplicates included.
    """
    pool = list(entries)
    if explore is not None and any(entry.niche for entry in pool):
        best = select_across_niches(pool, max(0, best_k), explore, direction)
    else:
        best = best_first(pool, direction)[: max(0, best_k)]
    chosen = {e.id for e in best}
    rest = sorted((e for e in pool if e.id not in chosen), key=lambda e: -e.id)
    return tuple(best), tuple(rest[: max(0, recent_m)])


def profile_notes(profile: dict[str, Any] | None) -> str:
    """One line of what the checker's profile says that matters for a proposal (stability, coupling...)."""
    if not profile:
        return ""
    notes: list[str] = []
    for key in ("notes", "summary"):
        value = profile.get(key)
        if isinstance(value, str) and value:
            notes.append(value)
        elif isinstance(value, list | tuple):
            notes.extend(str(v) for v in value if v)
    flags = {
        "rho_only": ("depends on the margin only", "depends on more than the margin"),
        "batch_coupled": ("couples examples in a batch", None),
        "stable_extremes": (None, "unstable at extreme margins"),
        "convex": ("convex in the margin", "not convex in the margin"),
    }
    for key, (if_true, if_false) in flags.items():
        value = profile.get(key)
        if value is True and if_true:
            notes.append(if_true)
        elif value is False and if_false:
            notes.append(if_false)
    return _clip("; ".join(dict.fromkeys(notes)), 300)


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
        """The one-call conversation in which the LLM writes the running lessons (``lossforge.discovery.search.lessons``):
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


def history_from_rows(rows: Sequence[Any], niche_axes: Sequence[str] = ()) -> tuple[HistoryEntry, ...]:
    """Adapt archive rows (mappings or objects with the same attribute names) to ``HistoryEntry``; with
    ``niche_axes`` (``search.niches``) each entry carries its niche."""

    def get(row: Any, key: str, default: Any = None) -> Any:
        if isinstance(row, dict):
            return row.get(key, default)
        return getattr(row, key, default)

    entries = []
    for row in rows:
        metrics = get(row, "metrics") or {}
        entries.append(
            HistoryEntry(
                id=int(get(row, "id")),
                name=str(get(row, "name") or ""),
                status=str(get(row, "status") or ""),
                code=str(get(row, "code") or ""),
                score=get(row, "score"),
                metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
                profile_notes=profile_notes(get(row, "profile")),
                reason=str(get(row, "reason") or ""),
                thought=str(get(row, "thought") or ""),
                generation=int(get(row, "generation") or 0),
                niche=niche_key(get(row, "profile"), niche_axes) if niche_axes else "",
            )
        )
    return tuple(entries)
