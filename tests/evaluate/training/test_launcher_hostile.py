"""Hostile candidates through the real training path, with the static policy off: never a forged score.

With the AST screen skipped (``lossforge train --no-static-policy``, ``train_candidate(static_policy=False)``)
only the deeper layers stand: the sandboxed check, the training process's lock-down and the scoring process,
which never ran the candidate. Each candidate (``tests/hostile/train_*.py``, plain DPO until it sees a gradient,
so the check passes it) must end ``rejected``, ``diverged`` or ``failed``, or be scored honestly.
The adapter checks of the scoring process (``scorer.read_adapter``) are tested directly at the end.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lossforge.candidates import load_builtin
from lossforge.evaluate.training.config import TrainConfig
from lossforge.evaluate.training.launcher import train_candidate
from lossforge.evaluate.training.result import RunResult

from tests.paths import HOSTILE, ROOT

FORGED = 99.0
# One thread: the same arithmetic in every process, so equal adapters give equal scores, bit for bit.
SETTINGS = {"task": "sentiment", "steps": 4, "seed": 0, "eval_samples": 32, "threads": 1}
CLI_ARGS = ("--task", "sentiment", "--steps", "4", "--seed", "0", "--eval-samples", "32", "--threads", "1")
SECRETS = {"OPENAI_API_KEY": "sk-test-secret-123", "HF_TOKEN": "hf_secret_456"}


def hostile(name: str) -> str:
    return (HOSTILE / f"{name}.py").read_text(encoding="utf-8")


def train_cli(path: Path, env: dict[str, str] | None = None) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """``lossforge train PATH --no-static-policy --json`` in a real process; its one JSON object and the process."""
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lossforge.discovery.cli import main; main()",
            "train",
            str(path),
            *CLI_ARGS,
            "--no-static-policy",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert completed.returncode in (0, 1), completed.stderr[-3000:]
    return json.loads(completed.stdout), completed  # stdout holds exactly one JSON object


def train_api(source: str) -> RunResult:
    return train_candidate(source, TrainConfig(**SETTINGS, timeout=600.0), static_policy=False)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def honest() -> RunResult:
    """Plain DPO with the same settings: what a candidate that is DPO apart from its attack must score."""
    result = train_candidate(load_builtin("dpo"), TrainConfig(**SETTINGS, timeout=600.0))  # type: ignore[arg-type]
    assert result.status == "ok", result.error
    return result


def test_a_loss_that_patches_the_task_scores_is_scored_as_plain_dpo(honest: RunResult) -> None:
    # Before the score moved to its own process this run returned status ok and score 99.0.
    payload, _ = train_cli(HOSTILE / "train_forge_score.py")
    assert payload["status"] == "ok", payload
    assert payload["score"] != FORGED and "forged" not in payload["metrics"]
    assert payload["score"] == honest.score  # the rest of the loss is DPO: the same adapter, the same score
    assert payload["metrics"] == honest.metrics


@pytest.mark.parametrize("claimed", ["ok", "trained"])
def test_a_result_forged_into_every_descriptor_is_not_a_score(tmp_path: Path, claimed: str) -> None:
    # "ok": the record the old same-process worker returned (it was believed: score 99.0); "trained": the
    # training process's own status, so the parent goes on to score the adapter file, which holds the forgery.
    path = tmp_path / "train_forge_result_pipe.py"
    path.write_text(hostile("train_forge_result_pipe").replace('FORGED_STATUS = "ok"', f'FORGED_STATUS = "{claimed}"'))
    payload, completed = train_cli(path)
    assert "Not at EOF" not in completed.stderr  # the fork server outlived the writes (the scorer is forked from it)
    assert payload["status"] == "failed", payload
    assert payload["score"] is None and "forged" not in payload["metrics"]
    expected = "no valid adapter" if claimed == "trained" else "ended with status 'ok'"
    assert expected in payload["error"]


def test_secrets_of_the_parent_reach_no_output_of_a_candidate_that_dumps_its_environment() -> None:
    env = {**os.environ, **SECRETS}
    payload, completed = train_cli(HOSTILE / "train_environ_read.py", env=env)
    assert payload["status"] == "failed" and "ValueError: {" in payload["error"], payload  # it did dump
    texts = (completed.stdout, completed.stderr, payload["error"], payload.get("stderr_tail") or "")
    for secret in SECRETS.values():
        for text in texts:
            assert secret not in text and secret.encode().hex() not in text


def test_parameters_overwritten_through_the_autograd_graph_are_scored_as_they_are() -> None:
    result = train_api(hostile("train_parameter_write"))
    assert result.status in ("ok", "diverged", "failed"), result.error
    if result.status == "ok":
        assert result.score is not None and math.isfinite(result.score) and result.score != FORGED


def test_a_loss_that_turns_nan_after_a_few_training_calls_diverges() -> None:
    result = train_api(hostile("train_call_counter"))
    assert result.status == "diverged", result.error
    assert result.score is None and "non-finite loss" in (result.error or "")


# --------------------------------------------------------------------- the scoring process's adapter checks


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    """A fresh LoRA model's adapter tensors, as the scoring process builds them from the parent's request."""
    from lossforge.evaluate.training.scorer import lora_config
    from peft import get_peft_model, get_peft_model_state_dict

    from tests.tiny_task import tiny_llama

    request = {"lora_r": 4, "lora_alpha": 4, "lora_dropout": 0.0}
    return dict(get_peft_model_state_dict(get_peft_model(tiny_llama(), lora_config(request))))


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    from safetensors.torch import save

    path.write_bytes(save({name: t.contiguous() for name, t in tensors.items()}))
    return str(path)


def test_a_well_formed_adapter_is_read_back(tmp_path: Path, expected: dict[str, torch.Tensor]) -> None:
    from lossforge.evaluate.training.scorer import read_adapter

    tensors = read_adapter(_write(tmp_path / "a.safetensors", expected), expected)
    assert set(tensors) == set(expected)
    assert all(torch.equal(tensors[name], expected[name]) for name in expected)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda t: {**t, "base_model.model.extra.weight": torch.zeros(2)}, "unexpected"),
        (lambda t: dict(list(t.items())[1:]), "missing"),
        (lambda t: {k: (v[:1] if i == 0 else v) for i, (k, v) in enumerate(t.items())}, "has shape"),
        (lambda t: {k: (v.long() if i == 0 else v) for i, (k, v) in enumerate(t.items())}, "floating-point"),
    ],
    ids=["extra-tensor", "missing-tensor", "wrong-shape", "integer-dtype"],
)
def test_an_adapter_unlike_the_lora_configuration_is_refused(
    tmp_path: Path, expected: dict[str, torch.Tensor], tamper: Any, message: str
) -> None:
    from lossforge.evaluate.training.scorer import InvalidAdapter, read_adapter

    with pytest.raises(InvalidAdapter, match=message):
        read_adapter(_write(tmp_path / "a.safetensors", tamper(expected)), expected)


def test_bytes_that_are_not_safetensors_and_a_missing_file_are_refused(
    tmp_path: Path, expected: dict[str, torch.Tensor]
) -> None:
    from lossforge.evaluate.training.scorer import InvalidAdapter, read_adapter

    forged = tmp_path / "forged"
    forged.write_bytes(json.dumps({"status": "ok", "score": FORGED}).encode())
    with pytest.raises(InvalidAdapter, match="not a safetensors file"):
        read_adapter(str(forged), expected)
    pickled = tmp_path / "pickled"
    torch.save(expected, pickled)  # a pickle is never loaded, whatever it holds
    with pytest.raises(InvalidAdapter, match="not a safetensors file"):
        read_adapter(str(pickled), expected)
    with pytest.raises(InvalidAdapter, match="no adapter file"):
        read_adapter(str(tmp_path / "nowhere"), expected)
