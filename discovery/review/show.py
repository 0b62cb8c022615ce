"""One candidate in full: code, thought, status, metrics (headline first), profile, lineage (parents with their
scores, and children), the LLM exchange that produced it (rendered prompt, raw reply, and the other repair
rounds of its proposal slot with why each was refused) and its confirmation trainings (``lossforge confirm``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from lossforge.discovery.review.snapshot import ReviewError, open_run
from lossforge.discovery.review.summary import profile_tags, run_task
from lossforge.discovery.review.task_info import headline_metrics
from lossforge.discovery.storage.archive import Archive, CandidateRow

CLIP_CHARS = 1500  # of each prompt message and of the reply, unless the full text is asked for


def clip(text: str | None, limit: int = CLIP_CHARS, hint: str = "") -> str:
    """``text`` cut to about ``limit`` characters (its head and tail), saying how much was left out."""
    text = text or ""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-(limit // 3) :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} characters clipped{hint} ...]\n{tail}"


def _brief(row: CandidateRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "status": row.status, "score": row.score, "generation": row.generation}


def lineage(row: CandidateRow, rows: list[CandidateRow]) -> dict[str, list[dict[str, Any]]]:
    """Parents (with score and status; an id not in the archive is kept with ``name`` None) and children."""
    by_id = {r.id: r for r in rows}
    parents = [
        _brief(by_id[p]) if p in by_id else {"id": p, "name": None, "status": None, "score": None, "generation": None}
        for p in row.parents
    ]
    children = [_brief(r) for r in rows if row.id in r.parents]
    return {"parents": parents, "children": children}


def exchange(archive: Archive, row: CandidateRow) -> dict[str, Any] | None:
    """The archived LLM call a row came from (messages as sent, raw reply, tokens, cost), or None."""
    if row.prompt_id is None:
        return None
    call = archive.llm_call(row.prompt_id)
    if call is None:
        return None
    return {
        key: call.get(key)
        for key in (
            "id",
            "model",
            "messages",
            "reply",
            "prompt_tokens",
            "completion_tokens",
            "latency_s",
            "cost_usd",
            "error",
            "attempts",
        )
    }


def attempts(row: CandidateRow, rows: list[CandidateRow]) -> list[dict[str, Any]]:
    """Every repair round of the row's proposal slot (same generation and index), in order."""
    same_slot = sorted(
        (r for r in rows if r.generation == row.generation and r.idx == row.idx), key=lambda r: r.repair_round
    )
    if len(same_slot) < 2:
        return []
    return [
        {
            "id": r.id,
            "repair_round": r.repair_round,
            "name": r.name,
            "status": r.status,
            "stage": r.stage,
            "reason": r.reason,
            "prompt_id": r.prompt_id,
        }
        for r in same_slot
    ]


def ordered_metrics(metrics: dict[str, Any], headline: tuple[str, ...]) -> dict[str, Any]:
    """The metrics with the headline ones first (in their declared order)."""
    first = {name: metrics[name] for name in headline if name in metrics}
    return {**first, **{k: v for k, v in metrics.items() if k not in first}}


def show(run_dir: str | Path, candidate_id: int) -> dict[str, Any]:
    """Everything archived about one candidate, plus its lineage, LLM exchange and repair rounds (``--json``
    prints it through ``summary.json_payload``)."""
    with open_run(run_dir) as archive:
        row = archive.get(candidate_id)
        rows = archive.candidates()
        if row is None:
            known = [r.id for r in rows]
            span = f"{min(known)}..{max(known)}" if known else "none (the run has no candidates yet)"
            raise ReviewError(f"no candidate {candidate_id} in {run_dir}; ids are {span}.")
        task = run_task(archive.get_meta("config"))
        headline = tuple(name for name in headline_metrics(task, row.metrics) if name in row.metrics)
        data = asdict(row)
        data.update(
            stats=row.stats,  # typed (``json_payload`` prints it as stored), not ``asdict``'s field-by-field copy
            parents=list(row.parents),
            metrics=ordered_metrics(row.metrics, headline),
            headline=list(headline),
            tags=profile_tags(row.profile),
            lineage=lineage(row, rows),
            exchange=exchange(archive, row),
            attempts=attempts(row, rows),
            task=task,
            confirmations=[c for c in archive.confirmations() if c["candidate_id"] == row.id],
        )
        path = archive.code_path(candidate_id)
        data["code_path"] = str(path) if path else None
    return data


__all__ = ["CLIP_CHARS", "attempts", "clip", "exchange", "lineage", "ordered_metrics", "show"]
