"""The tasks derived from ``sentiment`` (``derived_sentiment``): sentiment's reference weights, held-out prompts
and pairs, a cache key that follows sentiment's, and data that a task seed determines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lossforge.evaluate.tasks.derived_sentiment import DerivedSentimentTask
from lossforge.evaluate.tasks.noisy_labels import NoisyLabelsTask
from lossforge.evaluate.tasks.off_policy import OffPolicyTask
from lossforge.evaluate.tasks.overoptimization import OverOptimizationTask
from lossforge.evaluate.tasks.sentiment import SentimentTask

DERIVED = [OffPolicyTask, NoisyLabelsTask, OverOptimizationTask]
SMALL = {"train_pairs": 48}


@pytest.mark.parametrize("cls", DERIVED)
def test_reference_and_heldout_data_are_sentiments(cls: type[DerivedSentimentTask], cache: Path) -> None:
    task, sentiment = cls(SMALL, cache_dir=cache), SentimentTask(cache_dir=cache)
    model, _ = task.reference()
    reference, _ = sentiment.reference()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert task.data()["heldout_prompts"] == sentiment.data()["heldout_prompts"]
    assert task.data()["heldout_pairs"] == sentiment.data()["heldout_pairs"]
    assert task.settings()["sentiment"] == sentiment.cache_key()
    assert not (task.artifact_dir / "reference").exists()  # never a copy of sentiment's weights
    assert task.data()["build_seconds"] < 30


@pytest.mark.parametrize("cls", DERIVED)
def test_same_seed_same_data_other_seed_differs(
    cls: type[DerivedSentimentTask], cache: Path, tmp_path: Path, seed7_cache: Path
) -> None:
    task = cls(SMALL, cache_dir=cache)
    again = cls(SMALL, cache_dir=tmp_path)  # a fresh cache: built again, not reloaded
    assert again.data()["train"] == task.data()["train"]
    other = cls(SMALL, cache_dir=seed7_cache, task_seed=7)  # sentiment's seed-7 reference (~10 s, once)
    assert other.cache_key() != task.cache_key()
    assert other.data()["train"] != task.data()["train"]
