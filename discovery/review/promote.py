"""Reviewing a run: the leaderboard, one candidate in full, and promoting a winner into the user library.

Read-only over the archive except ``promote``, which writes one file into the user library
(``$LOSSFORGE_HOME/candidates``) where ``lossforge.candidates.load_library`` picks it up.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lossforge.candidates import BUILTIN_NAMES, read_metadata, user_library_dir
from lossforge.discovery.archive import Archive, CandidateRow
from lossforge.discovery.candidate_files import contract_file_text
from lossforge.discovery.ranking import best_first

ARCHIVE_FILE = "archive.sqlite"
_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,59}$")


class ReviewError(ValueError):
    """A run directory, candidate id or name that cannot be reviewed or promoted; the message says why."""


def open_run(run_dir: str | Path) -> Archive:
    """Open an existing run's archive; never creates one."""
    run_dir = Path(run_dir)
    if not (run_dir / ARCHIVE_FILE).is_file():
        raise ReviewError(f"{run_dir} is not a lossforge run directory (no {ARCHIVE_FILE}); pass the --out of a run.")
    return Archive.open(run_dir)


def leaderboard(run_dir: str | Path, *, top: int | None = None, include_all: bool = False) -> list[dict[str, Any]]:
    """Candidates ranked by score (best first). By default only trained (``ok``) ones; ``include_all`` adds
    every other proposal after them, newest last, with its status and reason."""
    with open_run(run_dir) as archive:
        rows = archive.candidates()
    trained = best_first(rows)
    ranked_ids = {r.id for r in trained}
    others = [r for r in rows if r.id not in ranked_ids] if include_all else []
    entries = [_summary(row, rank=i + 1) for i, row in enumerate(trained)] + [_summary(r, rank=None) for r in others]
    return entries[:top] if top is not None else entries


def _summary(row: CandidateRow, rank: int | None) -> dict[str, Any]:
    return {
        "rank": rank, "id": row.id, "name": row.name, "generation": row.generation, "status": row.status,
        "score": row.score, "metrics": row.metrics, "fingerprint": row.fingerprint, "parents": list(row.parents),
        "proposer": row.proposer, "stage": row.stage, "reason": row.reason,
    }  # fmt: skip


def show(run_dir: str | Path, candidate_id: int) -> dict[str, Any]:
    """Everything archived about one candidate: code, thought, profile, metrics, timings, lineage."""
    with open_run(run_dir) as archive:
        row = archive.get(candidate_id)
        if row is None:
            known = [r.id for r in archive.candidates()]
            raise ReviewError(f"no candidate {candidate_id} in {run_dir}; ids are {_ranges(known) or 'none'}.")
        data = asdict(row)
        data["parents"] = list(row.parents)
        path = archive.code_path(candidate_id)
        data["code_path"] = str(path) if path else None
    return data


def _ranges(ids: list[int]) -> str:
    return f"{min(ids)}..{max(ids)}" if ids else ""


def promote(
    run_dir: str | Path,
    candidate_id: int,
    *,
    name: str | None = None,
    user_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Copy a trained candidate into the user library as ``<name>.py``, metadata filled in.

    Only ``ok`` candidates are promoted unless ``force``; a name taken by a built-in or an existing user file
    is refused, so a promotion never replaces another loss.
    """
    row = show(run_dir, candidate_id)
    if row["status"] != "ok" and not force:
        raise ReviewError(
            f"candidate {candidate_id} has status {row['status']!r} ({row['reason'] or 'no reason recorded'}); "
            "only trained candidates (status 'ok') are promoted. Pass --force to promote it anyway."
        )
    if not row["code"]:
        raise ReviewError(f"candidate {candidate_id} has no code to promote.")
    name = name or _default_name(row)
    if not _NAME_PATTERN.match(name):
        raise ReviewError(f"name {name!r} is not a valid loss name; use lower-case letters, digits and '_'.")
    if name in BUILTIN_NAMES:
        raise ReviewError(f"name {name!r} is a built-in loss; choose another with --name.")
    directory = Path(user_dir) if user_dir is not None else user_library_dir()
    target = directory / f"{name}.py"
    if target.exists():
        raise ReviewError(f"{target} already exists; choose another name with --name or remove that file first.")
    origin = read_metadata(row["code"]).get("ORIGIN") or row["origin"] or row["proposer"] or ""
    text = contract_file_text(
        row["code"], name=name, description=row["thought"] or "",
        origin=f"{origin} (run {Path(run_dir).resolve().name}, candidate {candidate_id})".strip(),
        parents=[str(p) for p in row["parents"]],
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def _default_name(row: dict[str, Any]) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", (row["name"] or f"candidate_{row['id']}").lower()).strip("_") or "candidate"
    if base[0].isdigit():
        base = f"c_{base}"
    return base[:60]
