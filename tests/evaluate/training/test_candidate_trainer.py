"""CandidateDPOTrainer: TRL's plug point, step-for-step equality with TRL's sigmoid loss, shared reference cache."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import trl
from lossforge.candidates import load_builtin
from lossforge.evaluate.training.candidate_trainer import BATCH_KEYS, REFERENCE_KEYS, CandidateDPOTrainer, DivergedError
from lossforge.evaluate.training.reference_cache import attach_reference_logps, reference_cache_key
from packaging.version import Version
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from tests.tiny_task import tiny_llama, tiny_pairs, tiny_tokenizer

STEPS = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _args(tmp_path: Path, **overrides: object) -> DPOConfig:
    values: dict[str, object] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "max_steps": STEPS,
        "learning_rate": 5e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,
        "logging_steps": 1,
        "seed": 0,
        "beta": 0.1,
        "max_length": 32,
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    values.update(overrides)
    return DPOConfig(**values)


def _lora() -> LoraConfig:
    return LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


def _candidate_trainer(
    tmp_path: Path, loss_fn: Any, *, seed: int = 0, data: Any = None, tokenizer: Any = None
) -> CandidateDPOTrainer:
    """The tiny Llama (weights of ``seed``) trained by ``loss_fn`` on 16 tiny pairs, with the tests' LoRA."""
    return CandidateDPOTrainer(
        model=tiny_llama(seed),
        args=_args(tmp_path),
        train_dataset=tiny_pairs(16) if data is None else data,
        processing_class=tiny_tokenizer() if tokenizer is None else tokenizer,
        peft_config=_lora(),
        loss_fn=loss_fn,
    )


def _losses(trainer: DPOTrainer) -> list[float]:
    trainer.train()
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def test_trl_plug_point_has_not_moved() -> None:
    # The override is written against TRL 1.16: if any of these move, re-read DPOTrainer._compute_loss.
    assert Version("1.16") <= Version(trl.__version__) < Version("1.17")
    params = list(inspect.signature(DPOTrainer.compute_loss).parameters)
    assert params == ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]
    assert callable(getattr(DPOTrainer, "compute_ref_log_probs", None))
    tokenizer = tiny_tokenizer()
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(
        [
            {
                "prompt_ids": [1, 5],
                "chosen_ids": [6, 2],
                "rejected_ids": [7, 2],
                "ref_chosen_logps": -1.0,
                "ref_rejected_logps": -2.0,
            }
        ]
    )
    assert set(BATCH_KEYS) | set(REFERENCE_KEYS) <= set(batch)
    assert batch["input_ids"].shape[0] == 2  # [chosen; rejected] stacked on the batch axis
    source = inspect.getsource(DPOTrainer._set_signature_columns_if_needed)
    assert all(key in source for key in REFERENCE_KEYS)  # the columns survive remove_unused_columns


def test_dpo_candidate_matches_trl_sigmoid_step_for_step(tmp_path: Path) -> None:
    data, tokenizer = tiny_pairs(32), tiny_tokenizer()
    builtin = DPOTrainer(
        model=tiny_llama(0),
        args=_args(tmp_path, loss_type="sigmoid"),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=_lora(),
    )
    expected = _losses(builtin)

    candidate = _candidate_trainer(tmp_path, load_builtin("dpo").fn, data=data, tokenizer=tokenizer)
    ref = attach_reference_logps(candidate, task_key="tiny-test", cache_dir=tmp_path / "cache")
    assert not ref.cached and ref.path.exists()
    got = _losses(candidate)

    assert len(got) == len(expected) == STEPS
    assert got[0] == pytest.approx(math.log(2), abs=1e-6)  # LoRA starts at B=0: policy == reference
    assert got == pytest.approx(expected, abs=1e-5)
    assert candidate.step_losses == pytest.approx(got, abs=1e-6)
    assert expected[-1] < expected[0]  # the comparison is not between two runs that did nothing
    lora_b = [p for name, p in candidate.model.named_parameters() if "lora_B" in name]
    assert any(p.abs().sum() > 0 for p in lora_b)
    for key in ("rewards/margins", "rewards/accuracies", "logps/chosen", "entropy"):
        assert key in candidate.state.log_history[-2]


def test_reference_cache_is_reused_and_keyed_by_the_model(tmp_path: Path) -> None:
    data, tokenizer = tiny_pairs(16), tiny_tokenizer()

    def build(seed: int) -> CandidateDPOTrainer:
        return _candidate_trainer(tmp_path, load_builtin("dpo").fn, seed=seed, data=data, tokenizer=tokenizer)

    first, second, other = build(0), build(0), build(1)
    computed = attach_reference_logps(first, task_key="k", cache_dir=tmp_path)
    reused = attach_reference_logps(second, task_key="k", cache_dir=tmp_path)
    assert reused.cached and reused.path == computed.path
    assert torch.equal(reused.chosen, computed.chosen)
    assert reference_cache_key(other, "k") != reference_cache_key(first, "k")
    assert reference_cache_key(first, "k2") != reference_cache_key(first, "k")
    assert set(REFERENCE_KEYS) <= set(second.train_dataset.column_names)


def test_non_finite_loss_stops_training(tmp_path: Path) -> None:
    def explodes(pc, pr, rc, rr, beta):
        margin = (pc - rc) - (pr - rr)
        return -torch.nn.functional.logsigmoid(beta * margin) * float("inf")

    trainer = _candidate_trainer(tmp_path, explodes)
    with pytest.raises(DivergedError, match="non-finite loss"):
        trainer.train()


def test_non_finite_gradient_stops_training(tmp_path: Path) -> None:
    def sqrt_at_zero(pc, pr, rc, rr, beta):  # loss 0 at policy == reference, but d sqrt(x)/dx = inf there
        return torch.sqrt(((pc - rc) - (pr - rr)) ** 2)

    trainer = _candidate_trainer(tmp_path, sqrt_at_zero)
    with pytest.raises(DivergedError, match="non-finite gradient"):
        trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_pytorch_kernels_switch_turns_off_every_triton_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The training worker flips these before its lock-down: a Triton kernel compiled after it (cache directory,
    # ptxas subprocess) is refused by the sandbox. If TRL renames them, this fails instead of a GPU run.
    import trl.trainer.utils as trl_utils
    from lossforge.evaluate.training.candidate_trainer import use_pytorch_kernels
    from trl.kernels import chunked_logprob

    monkeypatch.setattr(chunked_logprob, "_TRITON_AVAILABLE", True)
    monkeypatch.setattr(trl_utils, "is_triton_available", lambda *args, **kwargs: True)
    assert chunked_logprob._use_triton(torch.device("cuda")) and trl_utils._use_triton(torch.device("cuda"))
    use_pytorch_kernels()
    assert not chunked_logprob._use_triton(torch.device("cuda"))
    assert not trl_utils._use_triton(torch.device("cuda"))
    assert not trl_utils.is_triton_available()
    # every Triton dispatch of the fused LM head and of selective_log_softmax goes through these two names
    dispatch = inspect.getsource(chunked_logprob) + inspect.getsource(trl_utils)
    assert "_forward_kernel[(n,)] if _use_triton(device) else _forward_tile" in dispatch
    assert dispatch.count("if is_triton_available() and _supports_trl_loss_kernel(") == 3
