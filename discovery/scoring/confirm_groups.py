"""A multi-task confirmation's verdict: the winners on the search tasks and on the held-out tasks (issue 19).

When a run trains on several tasks, or is confirmed on tasks it never searched on (``training.suite``'s
held-out tasks, the meta-test), each confirmed target's per-task scores on the held-out seeds are normalized
as the search normalized them (``stats.multi_task``: the untrained reference at 0, the baseline's mean at 1,
both measured on the same held-out seeds: the confirmation trains the reference too) and combined per seed by
``search.aggregate``, once over the run's search tasks and once over the held-out tasks. Each group's
per-seed values get a mean, a 95% interval and paired differences to the baseline and to the best library
loss; the run's sentence reports the winner (the confirmed candidate with the largest paired gain over the
baseline on the search tasks) on both groups, each with its interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from lossforge.discovery.stats import statistics
from lossforge.discovery.stats.multi_task import Aggregate, TaskScale, combine
from lossforge.discovery.stats.seed_stats import PairedStats

Group = Literal["search", "heldout"]
GROUP_WORDS: dict[Group, str] = {"search": "the search tasks", "heldout": "the held-out tasks"}


def compare(mine: dict[str, Any], theirs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The paired difference of two result entries (``name``, ``candidate_id``, ``seeds``, ``scores``) on their
    common seeds, as JSON; None when either has no score."""
    if theirs is None or not mine["scores"] or not theirs["scores"]:
        return None
    pair = PairedStats.between(
        mine["seeds"],
        mine["scores"],
        theirs["seeds"],
        theirs["scores"],
        baseline=theirs["name"],
        baseline_id=theirs["candidate_id"],
    )
    return None if pair is None else pair.to_json()


def _scales(entries: Sequence[dict[str, Any]], tasks: Sequence[str]) -> dict[str, TaskScale] | None:
    scales = {}
    for task in tasks:
        reference = next((e for e in entries if e["task"] == task and e["role"] == "reference"), None)
        base = next((e for e in entries if e["task"] == task and e["role"] == "baseline"), None)
        if reference is None or base is None or not reference["scores"] or not base["scores"]:
            return None
        scales[task] = TaskScale.of(task, reference["scores"], base["scores"])
    return scales


def _group(
    entries: Sequence[dict[str, Any]], group: Group, tasks: Sequence[str], how: Aggregate
) -> list[dict[str, Any]]:
    scales = _scales(entries, tasks)
    if scales is None:  # the reference or the baseline failed on a task: nothing to normalize by
        return []
    out = []
    targets = {e["candidate_id"]: e for e in entries if e["role"] != "reference"}
    for cid, first in targets.items():
        normalized = {}
        for task in tasks:
            mine = next(e for e in entries if e["task"] == task and e["candidate_id"] == cid)
            normalized[task] = {s: scales[task].normalize(x) for s, x in zip(mine["seeds"], mine["scores"])}
        combined = combine(normalized, how)
        scores = list(combined.values())
        out.append(
            {
                "group": group,
                "tasks": list(tasks),
                "candidate_id": cid,
                "name": first["name"],
                "role": first["role"],
                "seeds": list(combined),
                "scores": scores,
                "mean": statistics.mean(scores) if scores else None,
                "ci": statistics.confidence_interval(scores),
            }
        )
    base = next(e for e in out if e["role"] == "baseline")
    library = next((e for e in out if e["role"] == "best_library"), base)
    for entry in out:
        entry["paired"] = None if entry is base else compare(entry, base)
        entry["vs_best_library"] = None if entry["role"] != "candidate" else compare(entry, library)
    return out


def group_results(
    entries: Sequence[dict[str, Any]],
    search_tasks: Sequence[str],
    tasks: Sequence[str],
    beta: float,
    how: Aggregate,
) -> list[dict[str, Any]]:
    """Per target, its normalized aggregate on the search tasks and on the held-out ones (``tasks`` the search did
    not use), at ``beta``; a group whose reference or baseline failed on a task is left out."""
    at_beta = [e for e in entries if e["beta"] == beta]
    heldout = [task for task in tasks if task not in search_tasks]
    out = []
    for group, group_tasks in (("search", list(search_tasks)), ("heldout", heldout)):
        if group_tasks:
            out += _group(at_beta, group, group_tasks, how)  # type: ignore[arg-type]
    return out


def _interval(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return "no paired result"
    ci = comparison["ci"]
    mean = statistics.signed(comparison["mean"])
    interval = f" [{statistics.signed(ci[0])}, {statistics.signed(ci[1])}]" if ci else ""
    return f"{mean}{interval} {comparison['verdict'] or ''}".rstrip()


def _on_group(entry: dict[str, Any], baseline: str) -> str:
    words = f"on {GROUP_WORDS[entry['group']]} ({', '.join(entry['tasks'])})"
    against = entry.get("vs_best_library")
    library = (
        f", vs the best library loss {against['baseline']} {_interval(against)}"
        if against and against["baseline"] != baseline
        else ""
    )
    return f"{words}: vs {baseline} {_interval(entry['paired'])}{library}"


def group_sentence(groups: Sequence[dict[str, Any]], baseline: str, seeds: int) -> tuple[str, dict[str, Any] | None]:
    """The run's verdict on both task groups, and the winner's search-group entry (None: no candidate)."""
    search = [e for e in groups if e["group"] == "search" and e["role"] == "candidate"]
    scale = f"normalized: 1 is {baseline}'s gain over the untrained reference; {seeds} held-out seeds"
    if not search:
        library = next((e for e in groups if e["group"] == "search" and e["role"] == "best_library"), None)
        if library is None:
            return f"no discovered candidate was trained, and {baseline} was the best library loss", None
        parts = [_on_group(e, baseline) for e in groups if e["candidate_id"] == library["candidate_id"]]
        return f"no discovered candidate was trained; the best library loss #{library['candidate_id']} " + (
            "; ".join(parts) + f" ({scale})"
        ), None
    winner = max(search, key=lambda e: ((e["paired"] or {}).get("mean") or float("-inf"), -e["candidate_id"]))
    parts = [_on_group(e, baseline) for e in groups if e["candidate_id"] == winner["candidate_id"]]
    verdict = (winner["paired"] or {}).get("verdict")
    lead = "beats" if verdict == "better" else "does not beat"
    text = f"#{winner['candidate_id']} {winner['name']} {lead} {baseline} on the search tasks outside the noise"
    return f"{text}: " + "; ".join(parts) + f" ({scale})", winner


__all__ = ["GROUP_WORDS", "Group", "compare", "group_results", "group_sentence"]
