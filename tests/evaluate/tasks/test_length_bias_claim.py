"""The length_bias task's claim at the default budget, through the real engine (``train_candidate``).

DPO trained on length-biased labels writes longer reviews than the reference while its gold reward rises
less than DPO's on unbiased labels (``length_bonus=0``: the same reference, pairs labelled by the gold reward
alone): the bias is learnt as length instead of quality (Park et al. 2024, arXiv 2403.19159).

The task's knobs were chosen on development seeds 200-202 (measured there: reference length ~6.8 tokens and
reward ~-0.04; biased DPO length ~16.3, reward ~+0.06; unbiased DPO length ~5.3, reward ~+0.33); the seeds
below played no part. Slow (builds two references, trains six runs): ``pytest -m slow``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from lossforge.candidates import load_builtin
from lossforge.evaluate.training.launcher import TrainConfig, train_candidate

SEEDS = (0, 1, 2)
MIN_LENGTH_GAIN = 4.0  # tokens per sample, biased DPO over the reference
MIN_REWARD_SHORTFALL = 0.1  # gold reward of unbiased DPO minus biased DPO's


@pytest.fixture(scope="module")
def runs() -> dict[int, dict[str, dict[str, float]]]:
    """Per seed: the metrics of the reference, DPO on biased labels and DPO on unbiased labels."""
    dpo = load_builtin("dpo")
    configs = {
        "reference": TrainConfig(task="length_bias", steps=0, threads=1),
        "biased": TrainConfig(task="length_bias", threads=1),
        "unbiased": TrainConfig(task="length_bias", options={"length_bonus": 0}, threads=1),
    }
    results: dict[int, dict[str, dict[str, float]]] = {}
    for seed in SEEDS:
        results[seed] = {}
        for name, config in configs.items():
            result = train_candidate(dpo, replace(config, seed=seed))
            assert result.status == "ok", result.error
            results[seed][name] = dict(result.metrics)
        print(
            f"seed {seed}: "
            + " ".join(
                f"{name} reward {m['reward']:+.3f} length {m['length']:.2f} kl {m['kl']:.2f}"
                for name, m in results[seed].items()
            )
        )
    return results


@pytest.mark.slow
def test_biased_labels_lengthen_the_samples(runs: dict[int, dict[str, dict[str, float]]]) -> None:
    for seed, metrics in runs.items():
        reference, biased, unbiased = (
            metrics["reference"]["length"],
            metrics["biased"]["length"],
            metrics["unbiased"]["length"],
        )
        assert biased >= reference + MIN_LENGTH_GAIN, f"seed {seed}: length {biased:.2f} vs reference {reference:.2f}"
        assert biased > unbiased, f"seed {seed}: biased length {biased:.2f} <= unbiased {unbiased:.2f}"


@pytest.mark.slow
def test_biased_labels_raise_the_gold_reward_less(runs: dict[int, dict[str, dict[str, float]]]) -> None:
    for seed, metrics in runs.items():
        biased, unbiased = metrics["biased"]["reward"], metrics["unbiased"]["reward"]
        assert unbiased - biased >= MIN_REWARD_SHORTFALL, f"seed {seed}: unbiased {unbiased:+.3f} biased {biased:+.3f}"
