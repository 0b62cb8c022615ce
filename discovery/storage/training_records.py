"""The archive's records of trainings: per-seed search trainings (to resume a candidate seed by seed) and
confirmation trainings (winners retrained on held-out seeds, other tasks and betas).

``TrainingRecords`` is a part of :class:`lossforge.discovery.storage.archive.Archive`, which supplies the
connection and its lock; each write is one committed transaction, like every archive write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any

from lossforge.discovery.storage.schema import confirmation_key, seed_run_key
from lossforge.evaluate.statuses import REUSABLE_STATUSES


class TrainingRecords:
    """The ``seed_runs`` and ``confirmations`` tables of a run archive."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    # -- seed runs: each finished search training of a candidate, for resuming it seed by seed ---------------

    def record_seed_run(
        self,
        cid: int,
        steps: int | None,
        seed: int,
        result: dict[str, Any],
        started: float | None = None,
        ended: float | None = None,
        task: str | None = None,
    ) -> None:
        """Store one training of candidate ``cid`` on ``seed`` at ``steps`` (None: the task's default) on ``task``
        (None: the run's one task; a multi-task run names each); a repeat replaces it. ``result`` is a
        ``RunResult.to_dict()``; only outcomes a rerun reproduces (``REUSABLE_STATUSES``) are stored, as a
        ``failed`` or ``timeout`` may be the machine's doing."""
        if result.get("status") not in REUSABLE_STATUSES:
            return
        values = (
            seed_run_key(cid, steps, seed, task),
            cid,
            steps,
            int(seed),
            task,
            json.dumps(result, sort_keys=True, allow_nan=True, default=str),
            started,
            ended,
            time.time(),
        )
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO seed_runs (key, candidate_id, steps, seed, task, result, started, ended, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def seed_runs(self, cid: int, steps: int | None, task: str | None = None) -> dict[int, dict[str, Any]]:
        """Candidate ``cid``'s stored trainings at ``steps`` on ``task`` (as recorded), by seed:
        ``{seed: {result, started, ended}}``."""
        with self._lock:
            records = self._db.execute(
                "SELECT seed, result, started, ended FROM seed_runs "
                "WHERE candidate_id = ? AND steps IS ? AND task IS ? ORDER BY id",
                (cid, steps, task),
            ).fetchall()
        return {
            int(r["seed"]): {"result": json.loads(r["result"]), "started": r["started"], "ended": r["ended"]}
            for r in records
        }

    # -- confirmations: winners retrained on held-out seeds, other tasks and betas -------------------------

    def record_confirmation(
        self,
        *,
        candidate_id: int | None,
        task: str,
        beta: float,
        seed: int,
        status: str,
        score: float | None = None,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> int:
        """Store one confirmation training (one candidate, task, beta and seed); a repeat replaces it."""
        key = confirmation_key(candidate_id, task, beta, seed)
        values = (
            key,
            candidate_id,
            task,
            float(beta),
            int(seed),
            status,
            score,
            json.dumps(metrics or {}, sort_keys=True, allow_nan=True),
            error,
            time.time(),
        )
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR REPLACE INTO confirmations (key, candidate_id, task, beta, seed, status, score, metrics, "
                "error, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return int(cursor.lastrowid or 0)

    def confirmation(self, candidate_id: int | None, task: str, beta: float, seed: int) -> dict[str, Any] | None:
        """The stored confirmation training of that candidate (None: the untrained reference), task, beta and seed,
        or None (not run yet)."""
        found = self._confirmation_rows("WHERE key = ?", (confirmation_key(candidate_id, task, beta, seed),))
        return found[0] if found else None

    def confirmations(self) -> list[dict[str, Any]]:
        """Every confirmation training, by id: ``candidate_id, task, beta, seed, status, score, metrics, error``."""
        return self._confirmation_rows()

    def _confirmation_rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            records = self._db.execute(f"SELECT * FROM confirmations {where} ORDER BY id", params).fetchall()
        rows = []
        for record in records:
            data = dict(record)
            data["metrics"] = json.loads(data["metrics"]) if data["metrics"] else {}
            rows.append(data)
        return rows


__all__ = ["TrainingRecords"]
