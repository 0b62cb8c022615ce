"""The retrain's preference pairs: the training split and the held-out split it is evaluated on.

Rows are read and normalized by :mod:`lossforge.evaluate.tasks.hf_data` (local JSONL/JSON/Parquet, a
``save_to_disk`` directory or a hub id; standard or conversational ``prompt/chosen/rejected``). The
held-out pairs are the dataset's ``test_split`` where it has one. Where it has none (a single local file,
say) a ``test_fraction`` share of the training split is carved out with the fixed ``SPLIT_SEED`` -- the
same pairs for the candidate and its baseline, whatever the training seed -- and ``Splits.note`` says so.
The training entry point (every rank) and the evaluation (the parent) both call :func:`load_splits`, so
they agree on which pairs were trained on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.hf_data import Row, is_local, load_rows

SPLIT_SEED = 0


@dataclass(frozen=True)
class Splits:
    train: list[Row]
    test: list[Row]
    carved: bool  # True: ``test`` was cut from the training split
    note: str  # one sentence for the log and metrics.json: where the held-out pairs come from


def has_split(dataset: str, split: str) -> bool:
    """Whether ``dataset`` has a split named ``split`` (a single local file has none)."""
    import datasets

    path = Path(dataset).expanduser()
    if is_local(dataset):
        if not path.is_dir():
            return False
        try:
            loaded = datasets.load_from_disk(str(path))
        except (OSError, ValueError, FileNotFoundError) as exc:
            raise TaskError(f"could not read dataset '{dataset}': {exc}") from None
        return isinstance(loaded, datasets.DatasetDict) and split in loaded
    try:
        return split in datasets.get_dataset_split_names(dataset)
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        raise TaskError(f"dataset '{dataset}' not found: not local and not reachable on the hub ({exc})") from None


def load_splits(
    dataset: str, *, train_split: str = "train", test_split: str = "test", test_fraction: float = 0.1
) -> Splits:
    """The training and held-out pairs of ``dataset``; raises ``TaskError`` for unusable data."""
    if not 0.0 < test_fraction < 1.0:
        raise TaskError(f"test_fraction must be in (0, 1), got {test_fraction}")
    path = Path(dataset).expanduser()
    # A local file or a directory of rows has no splits; load_rows reads it whatever the split name.
    single = is_local(dataset) and not (path.is_dir() and has_split(dataset, train_split))
    train = load_rows(dataset, train_split)
    if not single and has_split(dataset, test_split):
        test = load_rows(dataset, test_split)
        return Splits(train, test, False, f"held-out pairs: the dataset's '{test_split}' split ({len(test)} pairs)")
    if len(train) < 2:
        raise TaskError(f"dataset '{dataset}' has {len(train)} pair(s); carving out a test split needs at least 2")
    order = list(range(len(train)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_test = min(max(1, round(len(train) * test_fraction)), len(train) - 1)
    held_out = sorted(order[:n_test])
    kept = sorted(order[n_test:])  # the training pairs keep their order: the trainer's sampler shuffles them
    note = (
        f"held-out pairs: the dataset has no '{test_split}' split, so {n_test} of its {len(train)} "
        f"'{train_split}' pairs ({test_fraction:.0%}) were carved out with seed {SPLIT_SEED} and not trained on"
    )
    return Splits([train[i] for i in kept], [train[i] for i in held_out], True, note)


__all__ = ["SPLIT_SEED", "Splits", "has_split", "load_splits"]
