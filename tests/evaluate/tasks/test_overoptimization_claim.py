"""The overoptimization task's claim, through the real engine (``train_candidate``): rise, then fall.

DPO's gold reward at an intermediate budget (50 steps, same learning rate) exceeds both the reference's and
the reward at the default budget (300 steps): trained long on few pairs, the policy drifts past the peak
(Rafailov et al. 2024, arXiv 2406.02900).

The task's knobs were chosen on development seeds 200-202 (measured there, at lr 1e-3: reference ~+0.05,
50 steps ~+0.25, 150 and 300 steps ~-0.95). A first choice, lr 5e-4 (collapsed at 300 steps on the development
seeds), failed here: seeds 1 and 2 had not yet fallen at 300 steps (+0.39, +0.46), the fall being a knife edge
between 250 and 300 steps. The rate was then re-chosen on the development seeds alone, requiring the collapse
by half the default budget as a margin; the seeds below chose nothing. Slow (nine runs): ``pytest -m slow``.
"""

from __future__ import annotations

import pytest
from lossforge.candidates import load_builtin
from lossforge.evaluate.training.launcher import TrainConfig, train_candidate

SEEDS = (0, 1, 2)
INTERMEDIATE_STEPS = 50
MIN_RISE = 0.1  # gold reward at the intermediate budget minus the reference's
MIN_FALL = 0.3  # gold reward at the intermediate budget minus the default budget's


@pytest.fixture(scope="module")
def runs() -> dict[int, dict[str, dict[str, float]]]:
    """Per seed: the metrics of the reference, DPO at the intermediate budget and at the default budget."""
    dpo = load_builtin("dpo")
    budgets = {"reference": 0, "intermediate": INTERMEDIATE_STEPS, "default": None}
    results: dict[int, dict[str, dict[str, float]]] = {}
    for seed in SEEDS:
        results[seed] = {}
        for name, steps in budgets.items():
            config = TrainConfig(task="overoptimization", steps=steps, seed=seed, threads=1)
            result = train_candidate(dpo, config)
            assert result.status == "ok", result.error
            results[seed][name] = dict(result.metrics, total_seconds=result.timings["total"])
        print(
            f"seed {seed}: "
            + " ".join(
                f"{name} reward {m['reward']:+.3f} kl {m['kl']:.2f} grammatical {m['grammatical']:.2f} "
                f"({m['total_seconds']:.1f}s)"
                for name, m in results[seed].items()
            )
        )
    return results


@pytest.mark.slow
def test_gold_reward_rises_then_falls(runs: dict[int, dict[str, dict[str, float]]]) -> None:
    for seed, metrics in runs.items():
        reference, peak, final = (metrics[name]["reward"] for name in ("reference", "intermediate", "default"))
        assert peak >= reference + MIN_RISE, f"seed {seed}: no rise, {reference:+.3f} -> {peak:+.3f}"
        assert peak >= final + MIN_FALL, f"seed {seed}: no fall, {peak:+.3f} -> {final:+.3f}"
        assert metrics["default"]["kl"] > metrics["intermediate"]["kl"], f"seed {seed}: the policy did not drift on"
