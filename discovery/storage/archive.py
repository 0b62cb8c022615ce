"""The run archive: every proposal, every LLM call and the run's provenance, in SQLite in the run directory.

API::

    archive = Archive.open(run_dir)                      # creates run_dir/archive.sqlite (WAL) and run_dir/candidates/
    cid = archive.add_candidate(generation=1, idx=0, code=..., name=..., status="pending")  # -> id
    archive.update_candidate(cid, status="ok", score=0.8, metrics={...})
    archive.get(cid) / archive.by_key("g1-i0-r0")        # -> CandidateRow | None
    archive.candidates(status=None, generation=None)     # -> list[CandidateRow], by id
    archive.find_by_fingerprint(fp, exclude_id=None)     # first trained / being-trained row with that fingerprint
    archive.recent(m)                                    # the last m finished rows (oldest first)
    archive.record_llm_call(LLMCall) -> id (record_llm_row({...}) for a raw row); archive.llm_totals() -> (calls,
    tokens, cost_usd)
    archive.record_seed_run(cid, steps, seed, result, started, ended) / archive.seed_runs(cid, steps)  # per-seed
    archive.record_confirmation(candidate_id=, task=, beta=, seed=, status=, score=, metrics=, error=)
    archive.confirmation(cid, task, beta, seed) / archive.confirmations()   # held-out retrainings of winners
    archive.set_meta(key, value) / archive.get_meta(key, default); archive.write_provenance(resolved_config)
    archive.reset_pending()                              # rows a killed run left pending, cleared for re-queueing
    archive.close()

Every write is its own committed transaction (WAL, synchronous=FULL), so a ``kill -9`` at any moment loses
nothing that was committed. ``proposal_key`` ("g{gen}-i{idx}-r{round}") is unique: on resume the loop asks
``by_key`` whether a proposal slot is already done. Each candidate with code is also written to
``run_dir/candidates/<id>_<name>.py`` in the library's contract format (metadata constants filled in), so it
can be promoted by copying.

The tables, columns and row type are ``schema``'s; the seed-run and confirmation tables' methods are
``training_records``'. The run lock (``run_lock``), the seed-result cache
(``seed_cache``) and provenance (``provenance``) live in their own modules. The archive stores and never ranks:
its callers rank its rows with ``lossforge.discovery.search.ranking.best_first``, the one ranking.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from lossforge.discovery.storage.candidate_files import contract_file_text
from lossforge.discovery.storage.provenance import git_sha, package_versions
from lossforge.discovery.storage.schema import (
    CANDIDATE_FIELDS,
    JSON_FIELDS,
    LLM_FIELDS,
    SCHEMA,
    STATUSES,
    ArchiveError,
    CandidateRow,
    decode_row,
    migrate,
    proposal_key,
)
from lossforge.discovery.storage.training_records import TrainingRecords
from lossforge.evaluate.statuses import SPENT_STATUSES

if TYPE_CHECKING:
    from lossforge.evaluate.llm import LLMCall


class Archive(TrainingRecords):
    """SQLite archive of one run. Thread-safe: one connection, writes serialised by a lock."""

    def __init__(self, run_dir: Path, connection: sqlite3.Connection) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "archive.sqlite"
        self.code_dir = run_dir / "candidates"
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, run_dir: str | Path) -> Archive:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "candidates").mkdir(exist_ok=True)
        # isolation_level=None: autocommit; each write below is an explicit short transaction.
        db = sqlite3.connect(run_dir / "archive.sqlite", isolation_level=None, check_same_thread=False, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the call returns
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        migrate(db)
        archive = cls(run_dir, db)
        archive._restore_code_files()
        return archive

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- candidates ------------------------------------------------------------------------------------

    def _encode(self, fields: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(fields) - set(CANDIDATE_FIELDS))
        if unknown:
            raise ArchiveError(f"unknown candidate field(s) {unknown}; valid: {', '.join(CANDIDATE_FIELDS)}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ArchiveError(f"status {fields['status']!r} is not one of {', '.join(STATUSES)}")
        out = dict(fields)
        for name in JSON_FIELDS:
            if name in out and out[name] is not None:
                value = list(out[name]) if name == "parents" else out[name]
                if name == "stats":  # a SeedStats (``scoring.seed_stats``): its JSON, as schema.decode_row reads it
                    value = value.to_json()
                out[name] = json.dumps(value, sort_keys=True, allow_nan=True)
        return out

    def add_candidate(self, **fields: Any) -> int:
        """Insert one proposal; ``generation`` and ``idx`` are required, ``proposal_key`` derived if absent."""
        if "generation" not in fields or "idx" not in fields:
            raise ArchiveError("add_candidate needs generation= and idx=")
        fields.setdefault("repair_round", 0)
        fields.setdefault("status", "pending")
        fields.setdefault("proposal_key", proposal_key(fields["generation"], fields["idx"], fields["repair_round"]))
        if fields.get("origin") is None and fields.get("proposer") == "evolve":
            fields["origin"] = "evolve"
        data = self._encode(fields)
        now = time.time()
        data["created"] = data["updated"] = now
        columns = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self._lock:
            try:
                cursor = self._db.execute(f"INSERT INTO candidates ({columns}) VALUES ({marks})", tuple(data.values()))
            except sqlite3.IntegrityError as exc:
                raise ArchiveError(f"cannot add candidate {data['proposal_key']!r}: {exc}") from None
            cid = int(cursor.lastrowid or 0)
        self._write_code_file(cid)
        return cid

    def update_candidate(self, cid: int, **fields: Any) -> None:
        if not fields:
            return
        data = self._encode(fields)
        data["updated"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in data)
        with self._lock:
            cursor = self._db.execute(f"UPDATE candidates SET {assignments} WHERE id = ?", (*data.values(), cid))
        if cursor.rowcount == 0:
            raise ArchiveError(f"no candidate with id {cid}")
        if {"code", "name", "thought", "parents", "origin"} & set(fields):
            self._write_code_file(cid)

    def _select(self, where: str = "", params: tuple[Any, ...] = (), tail: str = "ORDER BY id") -> list[CandidateRow]:
        with self._lock:
            records = self._db.execute(f"SELECT * FROM candidates {where} {tail}", params).fetchall()
        return [decode_row(r) for r in records]

    def get(self, cid: int) -> CandidateRow | None:
        rows = self._select("WHERE id = ?", (cid,))
        return rows[0] if rows else None

    def by_key(self, key: str) -> CandidateRow | None:
        rows = self._select("WHERE proposal_key = ?", (key,))
        return rows[0] if rows else None

    def candidates(self, status: str | None = None, generation: int | None = None) -> list[CandidateRow]:
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if generation is not None:
            clauses.append("generation = ?")
            params.append(generation)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select(where, tuple(params))

    def find_by_fingerprint(self, fingerprint: str, exclude_id: int | None = None) -> CandidateRow | None:
        """The first row with this fingerprint that was trained, is being trained, or failed in training."""
        marks = ", ".join("?" for _ in SPENT_STATUSES)
        rows = self._select(
            f"WHERE fingerprint = ? AND status IN ({marks}) AND id != ?",
            (fingerprint, *SPENT_STATUSES, -1 if exclude_id is None else exclude_id),
            "ORDER BY id LIMIT 1",
        )
        return rows[0] if rows else None

    def recent(self, m: int) -> list[CandidateRow]:
        """The m most recently added finished rows (any status but pending), oldest first."""
        rows = self._select("WHERE status != 'pending'", (), f"ORDER BY id DESC LIMIT {int(m)}")
        return rows[::-1]

    def reset_pending(self) -> list[CandidateRow]:
        """Clear what a killed run left half-done on ``pending`` rows and return them for re-queueing.

        Their proposal (code, name, thought, parents, LLM call) is kept: it was paid for; the check and
        training outcome (stage, reason, profile, fingerprint, metrics, score, timings) is cleared. Its finished
        seeds (``seed_runs``) are kept: retraining it trains only the others.
        """
        with self._lock:
            self._db.execute(
                "UPDATE candidates SET stage = NULL, reason = NULL, profile = NULL, fingerprint = NULL, "
                "metrics = NULL, score = NULL, timings = NULL, updated = ? WHERE status = 'pending'",
                (time.time(),),
            )
        return self.candidates(status="pending")

    def _write_code_file(self, cid: int) -> None:
        row = self.get(cid)
        if row is None or not row.code:
            return
        for old in self.code_dir.glob(f"{cid}_*.py"):  # a rename must not leave the old file behind
            old.unlink()
        name = row.name or f"candidate_{cid}"
        origin = row.origin
        if not origin and row.prompt_id is not None:  # an LLM proposal: ORIGIN names the model, as DESIGN.md asks
            call = self.llm_call(row.prompt_id)
            origin = f"llm:{call['model']}" if call and call.get("model") else None
        text = contract_file_text(
            row.code,
            name=name,
            description=row.thought or "",
            origin=origin or row.proposer or "",
            parents=[str(p) for p in row.parents],
        )
        safe = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)[:60]
        target = self.code_dir / f"{cid}_{safe}.py"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)  # atomic: a kill never leaves a half-written file

    def _restore_code_files(self) -> None:
        # A kill between a row's commit and its file write leaves the row without its file: write it now.
        prefixes = (p.name.split("_", 1)[0] for p in self.code_dir.glob("*_*.py"))
        present = {int(prefix) for prefix in prefixes if prefix.isdigit()}
        with self._lock:
            query = "SELECT id FROM candidates WHERE code IS NOT NULL AND code != ''"
            with_code = [record[0] for record in self._db.execute(query)]
        for cid in with_code:
            if cid not in present:
                self._write_code_file(cid)

    def code_path(self, cid: int) -> Path | None:
        found = sorted(self.code_dir.glob(f"{cid}_*.py"))
        return found[0] if found else None

    # -- LLM calls ---------------------------------------------------------------------------------------

    def record_llm_call(self, call: LLMCall) -> int:
        """Archive one LLM call record (proposer, repair or lessons call); its row id."""
        return self.record_llm_row(
            {
                "model": call.model,
                "messages": [dict(m) for m in call.messages],
                "reply": call.reply,
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "latency_s": call.latency_s,
                "cost_usd": call.cost_usd or 0.0,
                "error": call.error,
                "attempts": call.attempts,
            }
        )

    def record_llm_row(self, record: dict[str, Any]) -> int:
        """Archive one raw ``llm_calls`` row (``LLM_FIELDS``); its row id."""
        unknown = sorted(set(record) - set(LLM_FIELDS))
        if unknown:
            raise ArchiveError(f"unknown llm_calls field(s) {unknown}; valid: {', '.join(LLM_FIELDS)}")
        data = dict(record)
        if "messages" in data and not isinstance(data["messages"], str):
            data["messages"] = json.dumps(data["messages"])
        data = {k: v for k, v in data.items() if v is not None}
        data["created"] = time.time()
        columns = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self._lock:
            cursor = self._db.execute(f"INSERT INTO llm_calls ({columns}) VALUES ({marks})", tuple(data.values()))
            return int(cursor.lastrowid or 0)

    def llm_call(self, call_id: int) -> dict[str, Any] | None:
        with self._lock:
            record = self._db.execute("SELECT * FROM llm_calls WHERE id = ?", (call_id,)).fetchone()
        if record is None:
            return None
        data = dict(record)
        if data["messages"] is not None:
            data["messages"] = json.loads(data["messages"])
        return data

    def llm_totals(self) -> tuple[int, int, float]:
        """(calls, prompt + completion tokens, cost in USD) over every recorded call, failed ones included."""
        with self._lock:
            calls, tokens, cost = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(prompt_tokens + completion_tokens), 0), COALESCE(SUM(cost_usd), 0) "
                "FROM llm_calls"
            ).fetchone()
        return int(calls), int(tokens), float(cost)

    # -- provenance ------------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                (key, json.dumps(value, sort_keys=True), time.time()),
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            record = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(record[0]) if record is not None else default

    def write_provenance(self, resolved_config: dict[str, Any]) -> None:
        """Store what reproduces the run: resolved config, package versions, git SHA, creation time."""
        self.set_meta("config", resolved_config)
        self.set_meta("versions", package_versions())
        self.set_meta("git_sha", git_sha())
        if self.get_meta("created") is None:  # a resumed run keeps its original creation time
            self.set_meta("created", time.time())


__all__ = [
    "STATUSES",
    "Archive",
    "ArchiveError",
    "CandidateRow",
    "proposal_key",
]
