"""train_candidate: statuses (ok, diverged, failed, timeout, rejected), reproducibility, betas, steps=0, config."""

from __future__ import annotations

from pathlib import Path

import pytest
from lossforge.candidates import load_builtin
from lossforge.evaluate.training.launcher import ConfigError, TrainConfig, train_candidate

from tests.tiny_task import TinyTask

TINY = "tests.tiny_task:TinyTask"

RAISES = """
NAME = "raises"
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    raise ValueError("boom from the candidate")
"""

# Finite for two calls, then infinite: the run must stop at step 3 rather than train on.
EXPLODES = """
import torch.nn.functional as F
NAME = "explodes"
CALLS = [0]
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    CALLS[0] += 1
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    scale = float("inf") if CALLS[0] > 2 else 1.0
    return -F.logsigmoid(beta * margin) * scale
"""

SPINS = """
NAME = "spins"
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    while True:
        pass
"""

WRITES = """
NAME = "writes"
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    open("/tmp/lossforge-escaped", "w").write("x")
    return policy_chosen_logps
"""


def _config(**overrides: object) -> TrainConfig:
    # One thread: the test machine's cores are shared, and oversubscribed OpenMP threads crawl.
    values: dict[str, object] = {"task": TINY, "steps": 3, "timeout": 120.0, "seed": 0, "threads": 1}
    values.update(overrides)
    return TrainConfig(**values)


def test_config_collects_every_error_with_the_bad_value() -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(task="nope", beta=0.0, steps=-1, betas=(0.1, -2.0), lora_dropout=1.5)
    message = str(info.value)
    for fragment in ("unknown task 'nope'", "beta must be > 0, got 0.0", "steps must be >= 0", "-2.0", "lora_dropout"):
        assert fragment in message


def test_same_seed_same_score_and_betas_in_one_call() -> None:
    single = train_candidate(load_builtin("dpo"), _config(beta=0.1))
    assert single.status == "ok", single.error
    assert set(single.timings) >= {"reference", "training", "evaluation"}
    assert single.metrics["train/loss"] < 0.6932  # three steps moved the policy off the reference

    multi = train_candidate(load_builtin("dpo"), _config(betas=(0.1, 0.5)))
    assert multi.status == "ok", multi.error
    assert set(multi.per_beta) == {"0.1", "0.5"}
    assert multi.per_beta["0.1"]["score"] == single.score  # same seed, same data: same result
    scores = [multi.per_beta[b]["score"] for b in ("0.1", "0.5")]
    assert multi.score == pytest.approx(sum(scores) / 2)
    assert multi.min_score == min(scores)
    assert "per_beta" in multi.to_dict() and "per_beta" not in single.to_dict()


def test_steps_zero_scores_the_untrained_reference() -> None:
    result = train_candidate(load_builtin("dpo"), _config(steps=0))
    assert result.status == "ok", result.error
    task = TinyTask()
    model, tokenizer = task.reference()
    assert result.score == pytest.approx(task.score(model, tokenizer, seed=0).score, abs=1e-6)
    assert result.timings["training"] == 0.0
    assert not any(key.startswith("train/") for key in result.metrics)


def test_a_candidate_that_raises_fails_with_its_error() -> None:
    result = train_candidate(RAISES, _config(), check=False)
    assert result.status == "failed"
    assert "ValueError: boom from the candidate" in result.error


def test_non_finite_loss_after_some_steps_is_diverged() -> None:
    result = train_candidate(EXPLODES, _config(steps=5), check=False)
    assert result.status == "diverged", result.error
    assert "non-finite loss" in result.error and "step 3" in result.error


def test_a_candidate_past_the_time_limit_is_killed() -> None:
    result = train_candidate(SPINS, _config(timeout=8.0), check=False)
    assert result.status == "timeout"
    assert result.timings["total"] < 20


def test_the_candidate_runs_under_the_sandbox_protections(tmp_path: object) -> None:
    result = train_candidate(WRITES, _config(), check=False)
    assert result.status == "failed"
    assert "refuses to open" in result.error


def test_the_score_comes_from_a_second_process_and_the_adapter_directory_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where run_one makes its scratch directories
    result = train_candidate(load_builtin("dpo"), _config(steps=1))
    assert result.status == "ok", result.error
    assert set(result.timings) >= {"reference", "training", "evaluation", "scoring_process", "total"}
    assert 0 < result.timings["evaluation"] <= result.timings["scoring_process"] < result.timings["total"]
    assert train_candidate(RAISES, _config(), check=False).status == "failed"
    assert list(tmp_path.iterdir()) == []  # after a scored run and after a failed one


def test_a_task_that_scores_in_the_parent_grades_outside_the_worker() -> None:
    import os

    result = train_candidate(load_builtin("dpo"), _config(task="tests.tiny_task:ParentGradedTinyTask", steps=1))
    assert result.status == "ok", result.error
    assert result.metrics["grader_pid"] == os.getpid() != result.metrics["worker_pid"]
    assert "train/loss" in result.metrics and result.score is not None
