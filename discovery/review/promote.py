"""Promoting a winner: copy a run's candidate into a loss library as ``<name>.py``, metadata filled in.

The default library is the user library (``$LOSSFORGE_HOME/candidates``), where ``lossforge train NAME`` and
``lossforge.candidates.load_library`` find it; ``--library DIR`` writes elsewhere, e.g. the ``candidates/``
folder of a source checkout to contribute the loss. The file is checked again (``lossforge.evaluate.check``:
parse, static policy, sandbox) before it is written, so a library never receives a file it would refuse.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lossforge.candidates import BUILTIN_NAMES, read_metadata, user_library_dir
from lossforge.discovery.review.show import show
from lossforge.discovery.review.snapshot import ReviewError
from lossforge.discovery.storage.candidate_files import contract_file_text
from lossforge.evaluate.statuses import SCORED_STATUS

# Matched with ``fullmatch``: ``match`` with ``$`` would accept a trailing newline ("okname\n"), and the name
# becomes a file name.
_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,59}")


def promote(
    run_dir: str | Path,
    candidate_id: int,
    *,
    name: str | None = None,
    library: str | Path | None = None,
    user_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Write candidate ``candidate_id`` of ``run_dir`` into ``library`` (default: the user library) and return
    the file's path. ``user_dir`` is the older name of ``library``.

    Refused (``ReviewError``): a candidate that did not train to status ``ok`` or a name that is already a
    file in the library, unless ``force``; a name taken by a built-in loss, an invalid name, code that fails
    the check (always).
    """
    row = show(run_dir, candidate_id)
    if row["status"] != SCORED_STATUS and not force:
        raise ReviewError(
            f"candidate {candidate_id} has status {row['status']!r} ({row['reason'] or 'no reason recorded'}); "
            "only trained candidates (status 'ok') are promoted. Pass --force to promote it anyway."
        )
    if not row["code"]:
        raise ReviewError(f"candidate {candidate_id} has no code to promote.")
    name = name or _default_name(row)
    if not _NAME_PATTERN.fullmatch(name):
        raise ReviewError(
            f"name {name!r} is not a valid loss name; use 1-60 lower-case letters, digits and '_', not starting "
            "with a digit (e.g. --name my_loss)."
        )
    if name in BUILTIN_NAMES:
        raise ReviewError(f"name {name!r} is a built-in loss; choose another with --name.")
    chosen = library if library is not None else user_dir
    directory = Path(chosen) if chosen is not None else user_library_dir()
    target = directory / f"{name}.py"
    if target.exists() and not force:
        raise ReviewError(f"{target} already exists; choose another name with --name, or pass --force to replace it.")
    text = _library_text(row, run_dir, name)
    _recheck(text, candidate_id)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(target)  # a library never holds a half-written loss
    return target


def _library_text(row: dict[str, Any], run_dir: str | Path, name: str) -> str:
    origin = read_metadata(row["code"]).get("ORIGIN") or row["origin"] or row["proposer"] or ""
    return contract_file_text(
        row["code"],
        name=name,
        description=row["thought"] or "",
        origin=f"{origin} (run {Path(run_dir).resolve().name}, candidate {row['id']})".strip(),
        parents=[str(p) for p in row["parents"]],
    )


def _recheck(text: str, candidate_id: int) -> None:
    """The file as it will be written must pass every layer of the checker."""
    from lossforge.evaluate import check  # imports the checker (and its sandbox) only when promoting

    report = check(text, fmt="python")
    if not report.passed:
        raise ReviewError(
            f"candidate {candidate_id} fails the check at stage {report.stage!r}: "
            f"{'; '.join(report.errors) or 'no error recorded'}; nothing was written."
        )


def _default_name(row: dict[str, Any]) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", (row["name"] or f"candidate_{row['id']}").lower()).strip("_") or "candidate"
    if base[0].isdigit():
        base = f"c_{base}"
    return base[:60]


__all__ = ["promote"]
