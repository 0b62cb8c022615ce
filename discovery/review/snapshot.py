"""Opening a run for review: a read-only, consistent snapshot of its archive.

``open_run(run_dir)`` returns an ``Archive`` over a read-only SQLite connection held inside one read
transaction, so every query a review command makes sees the same committed state, even while a live run keeps
writing (WAL readers never block the writer, and the writer never blocks them). Nothing is created or
migrated: a review never changes a run, except an archive written before the current schema, which is opened
the ordinary way once so that its missing columns are added (``archive_schema.MIGRATIONS``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Self

from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.storage.schema import CANDIDATE_FIELDS

ARCHIVE_FILE = "archive.sqlite"
_TABLES = ("candidates", "llm_calls", "confirmations", "meta")  # archive_schema.SCHEMA's tables


class ReviewError(ValueError):
    """A run directory, candidate id or name that cannot be reviewed or promoted; the message says why."""


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run archive (cheap: no database is opened)."""
    return (path / ARCHIVE_FILE).is_file()


class RunSnapshot(Archive):
    """A read-only ``Archive`` inside one read transaction, with the listings review needs beyond its API."""

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of a read query on the snapshot, as dicts."""
        with self._lock:  # one statement at a time on the connection, as the Archive does
            return [dict(record) for record in self._db.execute(sql, params).fetchall()]

    def llm_calls(self) -> list[dict[str, Any]]:
        """Every LLM call of the run in order, without the (large) messages and reply."""
        return self.query(
            "SELECT id, model, prompt_tokens, completion_tokens, latency_s, cost_usd, error, "
            "attempts, created FROM llm_calls ORDER BY id"
        )

    def __enter__(self) -> Self:
        return self


def open_run(run_dir: str | Path) -> RunSnapshot:
    """Open an existing run's archive read-only, as one consistent snapshot; never creates one.

    Use as a context manager (``with open_run(d) as archive``): closing it ends the snapshot.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ReviewError(f"{run_dir} is not a lossforge run directory (it does not exist); pass the --out of a run.")
    if not is_run_dir(run_dir):
        raise ReviewError(f"{run_dir} is not a lossforge run directory (no {ARCHIVE_FILE}); pass the --out of a run.")
    try:
        db = _connect_read_only(run_dir / ARCHIVE_FILE)
        missing = _missing_schema(db)
    except sqlite3.DatabaseError as exc:
        raise ReviewError(f"{run_dir / ARCHIVE_FILE} is not a readable lossforge archive ({exc}).") from None
    if "candidates" in missing:
        db.close()
        raise ReviewError(f"{run_dir / ARCHIVE_FILE} is not a lossforge archive (no candidates table).")
    if missing:  # an archive from before a schema change: migrate it once, then read it like any other
        db.close()
        Archive.open(run_dir).close()
        db = _connect_read_only(run_dir / ARCHIVE_FILE)
    db.execute("BEGIN")  # the snapshot starts at the first read and lasts until close
    return RunSnapshot(run_dir, db)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=30
    )
    db.row_factory = sqlite3.Row
    return db


def _missing_schema(db: sqlite3.Connection) -> set[str]:
    """Tables (or ``candidates.<column>``) the current schema has and this archive lacks."""
    tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = set(_TABLES) - tables
    if "candidates" in tables:
        columns = {str(info[1]) for info in db.execute("PRAGMA table_info(candidates)")}
        missing |= {f"candidates.{name}" for name in CANDIDATE_FIELDS if name not in columns}
    return missing


__all__ = ["ARCHIVE_FILE", "ReviewError", "RunSnapshot", "is_run_dir", "open_run"]
