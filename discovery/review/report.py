"""``lossforge report``: one self-contained HTML file per run (default ``RUN/report.html``).

It opens from disk with no network: the summary (task, proposer, budget, cost, best and confirmed winner), a
sortable leaderboard with one row per archived candidate, the figures embedded as PNG data, failures grouped
by reason, every candidate's thought, syntax-highlighted code (Pygments, inline styles), metrics, lineage
links and LLM exchange, and the resolved config with package versions. ``lossforge run`` rewrites it after
every generation (``GenerationReports``, the loop's ``on_generation_end``); the write is atomic (a temporary
file, then ``os.replace``), so a browser reloading it never sees half a page.
"""

from __future__ import annotations

import base64
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment
from lossforge.discovery.generation_end import GenerationEnd
from lossforge.discovery.review.leaderboard import choose_metrics, ranked_rows
from lossforge.discovery.review.plot import RunData, png_bytes, read_run_data, run_figures
from lossforge.discovery.review.report_template import CONTENT_POLICY, SORT_SCRIPT, STYLE, TEMPLATE
from lossforge.discovery.review.runs import overview
from lossforge.discovery.review.search_views import model_records
from lossforge.discovery.review.show import clip, exchange, lineage, ordered_metrics
from lossforge.discovery.review.snapshot import RunSnapshot, open_run
from lossforge.discovery.review.summary import (
    estimate_text,
    interval_text,
    multi_seed,
    number,
    profile_tags,
    score_of,
    score_text,
    value_text,
    verdict_of,
)
from lossforge.discovery.review.task_info import headline_metrics
from lossforge.discovery.scoring.confirm_groups import GROUP_WORDS
from lossforge.discovery.storage.archive import CandidateRow
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

REPORT_FILE = "report.html"
EXCHANGE_CHARS = 4000  # of each prompt message and reply in the report; `lossforge show --prompt` has all
REASON_LINE_CHARS = 160

_ENVIRONMENT = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_TEMPLATE = _ENVIRONMENT.from_string(TEMPLATE)
_FORMATTER = HtmlFormatter(noclasses=True, style="default")
_LEXER = PythonLexer()


def _first_line(text: str | None, limit: int = REASON_LINE_CHARS) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:limit] if lines else ""


def _entry(rank: int | None, row: CandidateRow, columns: tuple[str, ...]) -> dict[str, Any]:
    """One leaderboard row; ``*_sort`` values make the column sort numerically (missing values last)."""
    value = score_of(row)
    return {
        "rank": rank,
        "id": row.id,
        "name": row.name,
        "generation": row.generation,
        "status": row.status,
        "score_text": score_text(row.score, row.stats),
        "sort_score": value if value is not None else -1e300,
        "verdict": verdict_of(row.stats),
        "tags": profile_tags(row.profile),
        "reason_line": _first_line(row.reason),
        "metric_text": {m: number(row.metrics.get(m), 4) for m in columns},
        "metric_sort": {m: row.metrics[m] if isinstance(row.metrics.get(m), int | float) else -1e300 for m in columns},
    }


def _failures(rows: list[CandidateRow]) -> list[dict[str, Any]]:
    """Unscored rows grouped by (status, stage, first line of the reason), most frequent first."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for row in rows:
        if row.status in ("ok", "pending"):
            continue
        key = (row.status, row.stage or "", _first_line(row.reason) or "no reason recorded")
        groups.setdefault(key, []).append(row.id)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[1][0]))
    return [{"count": len(ids), "status": s, "stage": st, "reason": r, "ids": ids} for (s, st, r), ids in ordered]


def _exchange(archive: RunSnapshot, row: CandidateRow, seen: dict[str, int]) -> dict[str, Any] | None:
    """``show.exchange`` with each prompt message and the reply clipped for the page; a message already shown
    for an earlier candidate (the system prompt, mostly) is replaced by a link to it (``seen``: text -> id)."""
    call = exchange(archive, row)
    if call is None:
        return None
    messages = []
    for message in call.get("messages") or []:
        content = message.get("content") or ""
        first = seen.setdefault(content, row.id)
        shown = clip(content, EXCHANGE_CHARS) if first == row.id else None
        messages.append(
            {"role": message.get("role"), "content": shown, "same_as": None if shown is not None else first}
        )
    return {**call, "messages": messages, "reply": clip(call.get("reply"), EXCHANGE_CHARS)}


def _candidate(
    archive: RunSnapshot, row: CandidateRow, rows: list[CandidateRow], headline: tuple[str, ...], seen: dict[str, int]
) -> dict[str, Any]:
    family = lineage(row, rows)
    metrics = ordered_metrics(row.metrics, headline)
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "score_text": score_text(row.score, row.stats),
        "generation": row.generation,
        "repair_round": row.repair_round,
        "proposer": row.proposer,
        "parents": [{**p, "score_text": number(p["score"])} for p in family["parents"]],
        "children": family["children"],
        "reason": row.reason,
        "stage": row.stage,
        "thought": row.thought,
        "metrics": [(k, number(v, 5)) for k, v in metrics.items()],
        "notes": (row.profile or {}).get("notes", []),
        # Pygments escapes the code it colours; the fragment is therefore safe to insert as HTML.
        "code_html": Markup(highlight(row.code, _LEXER, _FORMATTER)) if row.code else None,
        "exchange": _exchange(archive, row, seen),
    }


def _confirmation(meta: dict[str, Any] | None, trainings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The confirmation summary (``lossforge confirm``'s meta) with the count of its archived trainings."""
    if not meta:
        return None
    results = []
    groups = [  # a multi-task confirmation's normalized aggregates, on the search and on the held-out tasks
        {**g, "task": f"{GROUP_WORDS[g['group']]} ({', '.join(g['tasks'])}), normalized", "beta": "-"}
        for g in meta.get("groups") or []
    ]
    for r in [*(meta.get("results") or []), *groups]:
        paired = r.get("paired") or {}
        # A mean and its interval share their decimals (``summary.interval_decimals``), paired difference included.
        results.append(
            {
                **r,
                "mean_text": value_text(r.get("mean"), r.get("ci")),
                "ci_text": interval_text(r.get("ci"), signed=False),
                "paired_text": (f"{estimate_text(paired.get('mean'), paired.get('ci'))} vs {paired.get('baseline')}")
                if paired
                else "",
                "verdict": paired.get("verdict"),
            }
        )
    winner = meta.get("winner") or {}
    return {
        "sentence": meta.get("sentence"),
        "winner": winner.get("name"),
        "results": results,
        "trainings": len(trainings),
        "failed": sum(1 for t in trainings if t.get("status") != "ok"),
    }


def _budget(config: dict[str, Any]) -> str:
    training, budget = config.get("training") or {}, config.get("budget") or {}
    parts = [
        f"{training.get('steps') or 'task default'} steps per training",
        f"{training.get('eval_samples') or 'task default'} evaluation samples",
        f"beta {training.get('beta')}",
    ]
    caps = [f"{key.removeprefix('max_')} <= {value}" for key, value in budget.items() if value is not None]
    return ", ".join(parts) + ("; LLM caps: " + ", ".join(caps) if caps else "; no LLM caps")


def render_report(archive: RunSnapshot) -> str:
    """The report of the run ``archive`` is a snapshot of, as one HTML string."""
    data: RunData = read_run_data(archive)
    rows = data.rows
    config = archive.get_meta("config") or {}
    summary = overview(archive)
    columns = choose_metrics(None, data.task, rows)
    headline = headline_metrics(data.task, columns)
    entries = [_entry(rank, row, columns) for rank, row in ranked_rows(rows, include_all=True)]
    best = summary["best"]
    if best:
        paired = best["stats"].paired if best["stats"] is not None else None
        best = {
            **best,
            "score": score_text(best["score"], best["stats"]),
            "baseline": None if paired is None else paired.baseline,
        }
    seen: dict[str, int] = {}
    figures = [
        {"name": name, "data": base64.b64encode(png_bytes(fig)).decode()} for name, fig in run_figures(data).items()
    ]
    return _TEMPLATE.render(
        policy=CONTENT_POLICY,
        style=Markup(STYLE),
        script=Markup(SORT_SCRIPT),
        run=archive.run_dir.resolve(),
        written=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        overview=summary,
        budget=_budget(config),
        best=best,
        confirmation=_confirmation(data.confirmation, archive.confirmations()),
        entries=entries,
        metric_columns=columns,
        has_stats=any(multi_seed(row.stats) for row in rows),
        figures=figures,
        failures=_failures(rows),
        candidates=[_candidate(archive, row, rows, headline, seen) for row in rows],
        config_yaml=yaml.safe_dump(config, sort_keys=True),
        versions=sorted((archive.get_meta("versions") or {}).items()),
        git_sha=archive.get_meta("git_sha"),
        models=model_records(archive.run_dir),
    )


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the report from a browser run by another user
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the run's report and write it (default ``RUN/report.html``); returns its path."""
    with open_run(run_dir) as archive:
        text = render_report(archive)
    target = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    write_atomically(target, text)
    return target


def refresh_report(run_dir: str | Path) -> str | None:
    """The call after each generation of a run: rewrite ``RUN/report.html``; returns why it could not (a report
    is a view of the run, so a failure to write it is reported, never raised into the run)."""
    try:
        write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - any failure of a view must leave the run going
        return f"report.html not updated: {type(exc).__name__}: {exc}"
    return None


class BackgroundRefresh:
    """``refresh_report`` for a running loop, on a thread of its own and at most once per ``min_interval_s``.

    The figures take ~0.5 s of CPU per rewrite; the next generation need not wait for them, and a run whose
    generations take seconds need not pay them each time (the rewrite holds the GIL, which slows the loop's
    thread even in the background). So a request renders at once if the last rewrite (or the run) began
    ``min_interval_s`` ago, else when that much has passed; requests while one is queued collapse into it (it
    reads the newest archive when it starts). ``close`` waits for a rewrite in progress and drops one not yet
    begun (``GenerationReports`` writes the final report itself). ``note`` receives why a rewrite failed.
    """

    def __init__(
        self,
        run_dir: str | Path,
        note: Callable[[str], None],
        min_interval_s: float = 30.0,
        *,
        since: float | None = None,
    ) -> None:
        self._run_dir = run_dir
        self._note = note
        self._interval = min_interval_s
        # The run has just started (or started at ``since``, a time.monotonic()): nothing to show before the interval.
        self._last = time.monotonic() if since is None else since
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lossforge-report")
        self._queued: Future[None] | None = None
        self._began = False  # whether the queued rewrite has begun (then a new request queues another)
        self._drop = True

    def request(self) -> None:
        queued = self._queued
        if queued is not None and not queued.done() and not self._began:
            return  # not begun: when it does, it reads what was just written
        self._began = False
        self._queued = self._pool.submit(self._refresh)

    def _refresh(self) -> None:
        if self._closing.wait(max(0.0, self._last + self._interval - time.monotonic())) and self._drop:
            return  # the run has ended: its final report replaces this one
        self._began = True
        self._last = time.monotonic()
        if problem := refresh_report(self._run_dir):
            self._note(problem)

    def close(self, *, finish_queued: bool = False) -> None:
        """Stop; a queued rewrite is dropped, or with ``finish_queued`` done at once."""
        self._drop = not finish_queued
        self._closing.set()
        self._pool.shutdown(wait=True)


class GenerationReports:
    """``lossforge run``'s ``on_generation_end`` (``lossforge.discovery.generation_end``): ``RUN/report.html``
    rewritten in the background after each generation (``BackgroundRefresh``, spaced from the start of the
    generations) and once more, at once, when the run has finished; an aborted run's queued rewrite is dropped.
    Why a rewrite failed goes to the run's progress notes, never into the run."""

    def __init__(self, min_interval_s: float = 30.0) -> None:
        self._interval = min_interval_s
        self._background: BackgroundRefresh | None = None

    def __call__(self, event: GenerationEnd) -> None:
        if event.ended is None:
            if self._background is None:
                self._background = BackgroundRefresh(event.run_dir, event.note, self._interval, since=event.started)
            self._background.request()
            return
        if self._background is not None:
            self._background.close()  # a rewrite in progress ends (one not begun is dropped); then the last, here
        if event.ended == "finished" and (problem := refresh_report(event.run_dir)):
            event.note(problem)  # the final report: finished state and confirmed winner


__all__ = [
    "REPORT_FILE",
    "BackgroundRefresh",
    "GenerationReports",
    "refresh_report",
    "render_report",
    "write_atomically",
    "write_report",
]
