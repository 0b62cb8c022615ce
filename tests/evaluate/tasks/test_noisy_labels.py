"""The noisy_labels task: sentiment's on-policy pairs with a fixed share swapped, the flags that say which,
sentiment's reference and held-out data, determinism, options. Fast: the reference and the pairs are
sentiment's shipped ones (200 pairs here, in a fresh cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lossforge.evaluate.tasks import grammar
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.noisy_labels import NoisyLabelsTask
from lossforge.evaluate.tasks.sentiment import SentimentTask

SMALL = {"train_pairs": 200}


@pytest.fixture(scope="module")
def task(cache: Path) -> NoisyLabelsTask:
    return NoisyLabelsTask(SMALL, cache_dir=cache, eval_samples=24)


def test_pairs_have_the_columns_and_the_size(task: NoisyLabelsTask) -> None:
    data = task.preference_data()
    assert data.column_names == ["prompt", "chosen", "rejected"] and len(data) == SMALL["train_pairs"]
    heldout = set(task.data()["heldout_prompts"])
    assert not {pair["prompt"] for pair in task.data()["train"]} & heldout


def test_a_fixed_share_of_labels_is_flipped_against_the_gold_reward(task: NoisyLabelsTask) -> None:
    pairs = task.data()["train"]
    flipped = [pair for pair in pairs if pair["flipped"]]
    assert len(flipped) / len(pairs) == pytest.approx(0.3, abs=0.01)
    assert task.data()["flipped_share"] == len(flipped) / len(pairs)
    for pair in pairs:
        chosen = grammar.gold_reward(pair["prompt"] + pair["chosen"])
        rejected = grammar.gold_reward(pair["prompt"] + pair["rejected"])
        assert (chosen, rejected) == (pair["chosen_reward"], pair["rejected_reward"])
        assert (chosen < rejected) if pair["flipped"] else (chosen > rejected)
    # Flips are spread over the data, not bunched at one end.
    first_half = sum(pair["flipped"] for pair in pairs[: len(pairs) // 2])
    assert 0.3 * len(flipped) < first_half < 0.7 * len(flipped)


def test_the_pairs_are_sentiments_on_policy_pairs(task: NoisyLabelsTask, cache: Path) -> None:
    sentiment = SentimentTask(cache_dir=cache)
    for pair, clean in zip(task.data()["train"], sentiment.data()["train"], strict=False):
        unflipped = (pair["rejected"], pair["chosen"]) if pair["flipped"] else (pair["chosen"], pair["rejected"])
        assert (pair["prompt"], *unflipped) == (clean["prompt"], clean["chosen"], clean["rejected"])
    clean_task = NoisyLabelsTask({**SMALL, "flip_rate": 0.0}, cache_dir=cache)
    assert not any(pair["flipped"] for pair in clean_task.data()["train"])
    columns = ("prompt", "chosen", "rejected")
    assert clean_task.preference_data().to_list() == [
        {c: pair[c] for c in columns} for pair in sentiment.data()["train"][: SMALL["train_pairs"]]
    ]


def test_another_task_seed_flips_other_pairs(task: NoisyLabelsTask, seed7_cache: Path) -> None:
    other = NoisyLabelsTask(SMALL, cache_dir=seed7_cache, task_seed=7)  # sentiment's seed-7 reference (~10 s)
    flips = [i for i, pair in enumerate(task.data()["train"]) if pair["flipped"]]
    assert flips != [i for i, pair in enumerate(other.data()["train"]) if pair["flipped"]]


def test_options_key_the_cache_and_bad_ones_are_refused(task: NoisyLabelsTask, cache: Path) -> None:
    assert NoisyLabelsTask({**SMALL, "flip_rate": 0.2}, cache_dir=cache).cache_key() != task.cache_key()
    with pytest.raises(TaskError, match="unknown option.*second_sentence"):
        NoisyLabelsTask({"second_sentence": 0.3}, cache_dir=cache)
    with pytest.raises(TaskError, match="flip_rate"):
        NoisyLabelsTask({"flip_rate": 1.5}, cache_dir=cache)
