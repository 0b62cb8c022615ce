"""Preference data for the ``hf`` and ``judge`` tasks: read, validate and normalize ``prompt/chosen/rejected``.

Sources: a local ``.jsonl``/``.json`` (JSON lines, or one JSON array), ``.parquet``, a directory written by
``Dataset.save_to_disk``, or a Hugging Face hub id. Rows are either *standard* (three strings) or
*conversational* (three lists of ``{"role", "content"}`` messages), TRL's two preference formats. A
conversational dataset without a ``prompt`` column (Anthropic HH style: whole conversations in ``chosen`` and
``rejected``) gets its prompt extracted as the shared leading messages, as TRL's ``extract_prompt`` does.
Every problem is a :class:`TaskError` naming the source and the row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossforge.evaluate.tasks.base import TaskError

Row = dict[str, Any]
COLUMNS = ("prompt", "chosen", "rejected")
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def is_local(dataset: str) -> bool:
    """A path that exists, or one that looks like a file path (so a typo is reported as a missing file)."""
    path = Path(dataset).expanduser()
    return path.exists() or path.suffix in _LOCAL_SUFFIXES or dataset.startswith((".", "/", "~"))


def dataset_identity(dataset: str, split: str) -> dict[str, str]:
    """What determines the data: a content hash for local sources, the id and split for hub datasets."""
    if not is_local(dataset):
        return {"hub": dataset, "split": split}
    path = Path(dataset).expanduser()
    if not path.exists():
        raise TaskError(f"dataset file '{dataset}' not found")
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return {"sha256": digest.hexdigest(), "split": split if path.is_dir() else ""}


def load_rows(dataset: str, split: str = "train") -> list[Row]:
    """Normalized rows ``{"prompt", "chosen", "rejected"}`` of ``dataset`` (other columns dropped)."""
    raw = _read_local(Path(dataset).expanduser(), split) if is_local(dataset) else _read_hub(dataset, split)
    if not raw:
        raise TaskError(f"dataset '{dataset}' has no rows")
    return normalize(raw, source=dataset)


def normalize(rows: Sequence[Row], *, source: str) -> list[Row]:
    columns = set(rows[0])
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise TaskError(
            f"dataset '{source}' has no {' or '.join(repr(c) for c in missing)} column; preference data needs "
            f"'prompt', 'chosen', 'rejected' (found: {', '.join(sorted(columns)) or 'none'})"
        )
    conversational = isinstance(rows[0]["chosen"], list)
    if "prompt" not in columns and not conversational:
        raise TaskError(
            f"dataset '{source}' has no 'prompt' column (found: {', '.join(sorted(columns))}); standard "
            "(string) preference data needs one; only conversational rows can have their prompt extracted"
        )
    out = []
    for index, row in enumerate(rows):
        where = f"dataset '{source}' row {index}"
        if "prompt" not in row:
            row = _extract_prompt(row, where)
        clean = {column: row.get(column) for column in COLUMNS}
        for column, value in clean.items():
            _check_value(value, conversational, f"{where} column '{column}'")
        out.append(clean)
    return out


def _check_value(value: Any, conversational: bool, where: str) -> None:
    if not conversational:
        if not isinstance(value, str):
            raise TaskError(f"{where}: expected a string like the first row, got {type(value).__name__}")
        return
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        raise TaskError(
            f"{where}: expected a list of {{'role', 'content'}} messages like the first row, got {value!r:.120}"
        )


def _extract_prompt(row: Row, where: str) -> Row:
    chosen, rejected = row["chosen"], row["rejected"]
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        raise TaskError(f"{where}: without a 'prompt' column, 'chosen' and 'rejected' must be conversations")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    # The completion must keep at least its last message: the prompt stops before the last assistant turn.
    shared = min(shared, len(chosen) - 1, len(rejected) - 1)
    if shared <= 0:
        raise TaskError(f"{where}: 'chosen' and 'rejected' share no leading messages to use as the prompt")
    return {**row, "prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def _read_local(path: Path, split: str) -> list[Row]:
    if not path.exists():
        raise TaskError(f"dataset file '{path}' not found")
    try:
        if path.is_dir():
            import datasets

            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise TaskError(f"dataset '{path}' has no split '{split}' (splits: {', '.join(loaded)})")
                loaded = loaded[split]
            return list(loaded)
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_table(path).to_pylist())
        return _read_json(path)
    except TaskError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TaskError(f"could not read dataset '{path}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow/datasets raise their own types for corrupt files
        raise TaskError(f"could not read dataset '{path}': {type(exc).__name__}: {exc}") from None


def _read_json(path: Path) -> list[Row]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TaskError(
                    f"could not read dataset '{path}': line {number} is not valid JSON ({exc.msg})"
                ) from None
    if not all(isinstance(row, dict) for row in rows):
        raise TaskError(f"could not read dataset '{path}': every row must be a JSON object")
    return rows


def _read_hub(dataset: str, split: str) -> list[Row]:
    import datasets

    try:
        return list(datasets.load_dataset(dataset, split=split))
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise TaskError(f"dataset '{dataset}' has no split '{split}': {exc}") from None
        raise TaskError(f"could not load dataset '{dataset}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types; one message for all
        raise TaskError(
            f"dataset '{dataset}' not found: not a local file and not reachable on the Hugging Face hub "
            f"(offline?) ({type(exc).__name__})"
        ) from None
