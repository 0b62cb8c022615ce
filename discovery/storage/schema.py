"""The archive's schema: its tables, the fields of a candidate row and how a row is decoded.

Tables: ``candidates`` (every proposal, failures included), ``llm_calls`` (every chat call), ``seed_runs`` (each
finished training of a candidate on one search seed, at one step count: a killed multi-seed candidate resumes
from them without retraining its finished seeds), ``confirmations`` (winners retrained on held-out seeds, tasks
and betas), ``meta`` (the resolved config, provenance, state).
An archive written before a column existed gets it added on open (``MIGRATIONS``), so old runs stay readable.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from lossforge.discovery.stats.seed_stats import SeedStats
from lossforge.evaluate.statuses import CANDIDATE_STATUSES

STATUSES = CANDIDATE_STATUSES

JSON_FIELDS = ("profile", "metrics", "timings", "parents", "stats")
CANDIDATE_FIELDS = (
    "generation",
    "idx",
    "repair_round",
    "status",
    "stage",
    "reason",
    "name",
    "thought",
    "code",
    "profile",
    "fingerprint",
    "metrics",
    "score",
    "timings",
    "parents",
    "proposer",
    "origin",
    "prompt_id",
    "seed",
    "proposal_key",
    "stats",
)
LLM_FIELDS = (
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    proposal_key TEXT UNIQUE NOT NULL,
    generation INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    repair_round INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ({statuses})),
    stage TEXT, reason TEXT, name TEXT, thought TEXT, code TEXT,
    profile TEXT, fingerprint TEXT, metrics TEXT, score REAL, timings TEXT, parents TEXT,
    proposer TEXT, origin TEXT,
    prompt_id INTEGER REFERENCES llm_calls(id),
    seed INTEGER,
    stats TEXT,
    created REAL NOT NULL, updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS candidates_fingerprint ON candidates(fingerprint);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates(status);
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY,
    model TEXT, messages TEXT, reply TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_s REAL, cost_usd REAL NOT NULL DEFAULT 0, error TEXT, attempts INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seed_runs (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    steps INTEGER, seed INTEGER NOT NULL, task TEXT,
    result TEXT NOT NULL, started REAL, ended REAL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS confirmations (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    candidate_id INTEGER REFERENCES candidates(id),
    task TEXT NOT NULL, beta REAL NOT NULL, seed INTEGER NOT NULL,
    status TEXT NOT NULL, score REAL, metrics TEXT, error TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL);
""".replace("{statuses}", ",".join(f"'{status}'" for status in CANDIDATE_STATUSES))


class ArchiveError(ValueError):
    """A write the archive refuses (unknown field, bad status, duplicate proposal key)."""


@dataclass(frozen=True)
class CandidateRow:
    """One row of ``candidates`` with its JSON columns decoded."""

    id: int
    proposal_key: str
    generation: int
    idx: int
    repair_round: int
    status: str
    stage: str | None = None
    reason: str | None = None
    name: str | None = None
    thought: str | None = None
    code: str | None = None
    profile: dict[str, Any] | None = None
    fingerprint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    score: float | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    parents: tuple[int, ...] = ()
    proposer: str | None = None
    origin: str | None = None
    prompt_id: int | None = None
    seed: int | None = None
    stats: SeedStats | None = None  # multi-seed statistics (``discovery.stats.seed_stats``), None before
    created: float = 0.0
    updated: float = 0.0


def proposal_key(generation: int, idx: int, repair_round: int = 0) -> str:
    return f"g{generation}-i{idx}-r{repair_round}"


def seed_run_key(candidate_id: int, steps: int | None, seed: int, task: str | None = None) -> str:
    """Unique per search training (``steps`` None: the task's default; ``task`` None: the run's one task), so a
    resumed candidate skips what is done."""
    on_task = "" if task is None else f"-{task}"
    return f"t{candidate_id}{on_task}-n{'default' if steps is None else int(steps)}-s{int(seed)}"


def confirmation_key(candidate_id: int | None, task: str, beta: float, seed: int) -> str:
    """Unique per confirmation training, so a resumed confirmation skips what is done (``candidate_id`` None: the
    untrained reference a multi-task confirmation normalizes by)."""
    who = "reference" if candidate_id is None else candidate_id
    return f"c{who}-{task}-b{float(beta)!r}-s{int(seed)}"


def decode_row(record: sqlite3.Row) -> CandidateRow:
    data = dict(record)
    for name in JSON_FIELDS:
        data[name] = json.loads(data[name]) if data[name] is not None else None
    data["metrics"] = data["metrics"] or {}
    data["timings"] = data["timings"] or {}
    data["parents"] = tuple(int(p) for p in data["parents"] or ())
    data["stats"] = SeedStats.from_json(data["stats"]) if data["stats"] is not None else None
    return CandidateRow(**data)


# Columns added after the first release: (table, column, SQL type), added to an older archive on open.
MIGRATIONS: tuple[tuple[str, str, str], ...] = (("candidates", "stats", "TEXT"), ("seed_runs", "task", "TEXT"))


def migrate(db: sqlite3.Connection) -> None:
    """Add the columns of ``MIGRATIONS`` that an older archive lacks."""
    for table, column, kind in MIGRATIONS:
        present = {str(info[1]) for info in db.execute(f"PRAGMA table_info({table})").fetchall()}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


__all__ = [
    "CANDIDATE_FIELDS",
    "JSON_FIELDS",
    "LLM_FIELDS",
    "MIGRATIONS",
    "SCHEMA",
    "STATUSES",
    "ArchiveError",
    "CandidateRow",
    "confirmation_key",
    "decode_row",
    "migrate",
    "proposal_key",
    "seed_run_key",
]
