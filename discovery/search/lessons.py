"""Running lessons (``search.lessons_every``): a short "what has worked, what has failed" in every prompt.

Every N generations (before generations 1, 1 + N, 1 + 2N, ...) the archive of the earlier generations is
summed up in at most ``search.lessons_max_chars`` characters:

- by rules, from the profiles and scores (``rule_lessons``): for each trait of ``traits`` that splits the
  scored candidates, the mean score on each side ("bounded losses scored lower than unbounded ones: 0.21 vs
  0.27 mean, n=3 vs 5"), largest gap first; then what failed (rejections by stage, duplicates);
- by the LLM itself, when the proposer can write them (``OpenAIProposer.write_lessons``): the rule-based
  facts and the best and failed candidates go into ``prompts/lessons.j2``; one call, archived in
  ``llm_calls`` and counted in the budget. A failed call falls back to the rules (noted in the source).

The text of each refresh is archived (meta ``lessons/g<generation>``) before it is used, so a resumed run
shows the same lessons and never asks the LLM twice; between refreshes the latest text is shown again. The
``evolve`` proposer writes no text, so its runs get (and archive) the rule-based lessons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from statistics import fmean
from typing import Any, Protocol

from lossforge.discovery.search.ranking import Direction, best_first
from lossforge.discovery.search.traits import TRAITS, label, traits
from lossforge.discovery.storage.archive import Archive, CandidateRow
from lossforge.evaluate.llm import BudgetExceeded, LLMCall, LLMError
from lossforge.evaluate.statuses import is_ranked

META_PREFIX = "lessons/g"


class LessonWriter(Protocol):
    """A proposer (``ProposerBase.write_lessons``): the lessons in its own words and the LLM call that wrote them,
    or None when it writes none (then the rule-based facts stand)."""

    def write_lessons(self, facts: str, rows: Sequence[CandidateRow], max_chars: int) -> tuple[str, LLMCall] | None: ...


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max(0, max_chars - 3)].rstrip() + "..."


def _trait_sentences(rows: Sequence[CandidateRow], direction: Direction) -> list[tuple[float, str]]:
    scored = [(traits(row.profile), float(row.score)) for row in rows if is_ranked(row)]  # type: ignore[arg-type]
    found = []
    for name in TRAITS:
        yes = [score for found_traits, score in scored if found_traits.get(name) is True]
        no = [score for found_traits, score in scored if found_traits.get(name) is False]
        if not yes or not no:
            continue
        a, b = fmean(yes), fmean(no)
        better = (a > b) == (direction == "higher")
        verb = "scored better than" if better else "scored worse than"
        if a == b:
            verb = "scored the same as"
        sentence = (
            f"{label(name, True)} losses {verb} {label(name, False)} ones: {a:.4g} vs {b:.4g} mean "
            f"(n={len(yes)} vs {len(no)})."
        )
        found.append((abs(a - b), sentence))
    return sorted(found, key=lambda item: -item[0])


def _failure_sentences(rows: Sequence[CandidateRow]) -> list[str]:
    proposed = [row for row in rows if row.generation > 0]
    if not proposed:
        return []
    rejected = Counter(row.stage or "?" for row in proposed if row.status == "rejected")
    duplicates = sum(row.status == "duplicate" for row in proposed)
    broken = sum(row.status in ("diverged", "failed", "timeout") for row in proposed)
    sentences = []
    if rejected:
        stages = ", ".join(f"{count} at the {stage} stage" for stage, count in rejected.most_common())
        sentences.append(f"{sum(rejected.values())} of {len(proposed)} proposals were rejected ({stages}).")
    if duplicates:
        sentences.append(f"{duplicates} were duplicates of earlier candidates: propose something genuinely new.")
    if broken:
        sentences.append(f"{broken} diverged, failed or timed out in training.")
    return sentences


def rule_lessons(rows: Sequence[CandidateRow], max_chars: int, direction: Direction = "higher") -> str:
    """Lessons from profiles and scores alone, at most ``max_chars`` characters (whole sentences kept first)."""
    sentences = []
    best = best_first(list(rows), direction)
    if best:
        sentences.append(f"Best so far: #{best[0].id} {best[0].name or 'unnamed'} ({best[0].score:.4g}).")
    sentences += [sentence for _, sentence in _trait_sentences(rows, direction)]
    sentences += _failure_sentences(rows)
    text = ""
    for sentence in sentences:
        joined = f"{text} {sentence}".strip()
        if len(joined) > max_chars:
            break
        text = joined
    return text or _clip(" ".join(sentences), max_chars)


def refresh_generation(generation: int, every: int) -> int:
    """The generation whose lessons generation ``generation`` shows: the latest refresh at or before it."""
    return generation - (generation - 1) % every


def lessons_for(
    archive: Archive,
    generation: int,
    *,
    every: int,
    max_chars: int,
    writer: LessonWriter | None = None,
    direction: Direction = "higher",
) -> str:
    """The lessons shown to generation ``generation`` (``""`` when ``every`` is 0): archived, or written now."""
    if every <= 0 or generation < 1:
        return ""
    at = refresh_generation(generation, every)
    stored = archive.get_meta(f"{META_PREFIX}{at}")
    if isinstance(stored, dict):
        return str(stored.get("text") or "")
    rows = [row for row in archive.candidates() if row.generation < at]
    facts = rule_lessons(rows, max_chars, direction)
    record: dict[str, Any] = {"text": facts, "source": "rules", "call_id": None}
    if writer is not None:
        try:
            written = writer.write_lessons(facts, rows, max_chars)
            if written is not None:
                text, call = written
                record = {
                    "text": _clip(text, max_chars) or facts,
                    "source": "llm",
                    "call_id": archive.record_llm_call(call),
                }
        except BudgetExceeded:
            record.update(source="rules (the LLM budget is spent)")
        except LLMError as exc:
            if exc.config_error:
                raise
            call_id = archive.record_llm_call(exc.record) if exc.record is not None else None
            record.update(source=f"rules (the LLM call failed: {exc})", call_id=call_id)
    archive.set_meta(f"{META_PREFIX}{at}", record)
    return str(record["text"])


__all__ = ["LessonWriter", "lessons_for", "refresh_generation", "rule_lessons"]
