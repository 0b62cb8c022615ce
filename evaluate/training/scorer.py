"""The scoring process: scores a trained LoRA adapter in a process that never imported or ran the candidate.

Code in a process can rewrite anything in that process: a loss that patches ``Task.score`` during training
(docs/DESIGN.md, "The score is computed where the candidate never ran") would forge the score of a process that
trains and scores. So the training process (``lossforge.evaluate.training.worker``) only hands back the
adapter weights, as a safetensors file, and ``score_adapter(request, adapter_path)`` (the target
``lossforge.evaluate.training.launcher`` hands to ``run_isolated``, forked from the fork server, which never
ran candidate code either) scores them:

1. trusted set-up: build the task, load the reference model and tokenizer, wrap it with LoRA built from the
   parent's request (r, alpha, dropout, target modules; never from anything the training process wrote),
   placed and cast as the trainer placed the model it trained;
2. ``apply_runtime_protections`` (defence in depth: the adapter file is untrusted data; scoring needs no
   network and writes nothing);
3. read the file with safetensors (never ``torch.load``: no pickle), check that its tensor names and shapes
   are exactly those of the fresh model's adapter and that every value is a finite float, load them;
4. ``task.score`` in eval mode; a task with ``scores_in_parent`` (the judge) instead returns
   ``task.collect(...)`` for the parent to ``grade``.

``steps == 0`` scores the untrained reference: no adapter, no training process (``adapter_path`` is None).
Returns (as JSON) ``ok`` with the score and the task's metrics, ``collected``, ``invalid_adapter``
(the file is missing, malformed or of the wrong shape), ``diverged`` (non-finite weights or score) or
``input_error`` (the task's own data cannot be scored).
"""

from __future__ import annotations

import math
import os
import time
from types import MethodType
from typing import Any

import torch
from lossforge.evaluate.isolation import Limits, apply_runtime_protections
from lossforge.evaluate.tasks import get_task
from lossforge.evaluate.tasks.base import Task, TaskError

# Room for the safetensors header (names, dtypes, shapes, offsets) beside the tensor bytes.
HEADER_BYTES_PER_TENSOR = 512
HEADER_SLACK_BYTES = 64 * 1024


class InvalidAdapter(ValueError):
    """The adapter file is not exactly the LoRA weights of the parent's configuration."""


def uses_cuda(request: dict[str, Any]) -> bool:
    """Whether the run trains (and so scores) on CUDA: ``device`` is ``cuda``, or ``auto`` with CUDA present."""
    return request["device"] == "cuda" or (request["device"] == "auto" and torch.cuda.is_available())


def uses_bf16(request: dict[str, Any]) -> bool:
    """bf16 mixed precision, as the trainer uses it: on CUDA where supported (docs/DESIGN.md: CPU stays float32)."""
    return uses_cuda(request) and torch.cuda.is_bf16_supported()


def lora_config(request: dict[str, Any]) -> Any:
    """The run's LoRA configuration, from the parent's request: the trainer's and the scorer's are one."""
    from peft import LoraConfig

    # "all-linear": every attention and MLP projection, never the output head (PEFT's rule).
    return LoraConfig(
        r=request["lora_r"],
        lora_alpha=request["lora_alpha"],
        lora_dropout=request["lora_dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def adapter_size_bound(expected: dict[str, torch.Tensor]) -> int:
    """Most bytes a safetensors file of these tensors can take: their data plus room for the header."""
    data = sum(t.numel() * t.element_size() for t in expected.values())
    return data + HEADER_BYTES_PER_TENSOR * len(expected) + HEADER_SLACK_BYTES


def _as_trained(model: Any, tokenizer: Any, request: dict[str, Any]) -> Any:
    """The reference wrapped with the run's LoRA as the trainer left it: pad token, device, autocast.

    ``DPOTrainer`` copies the tokenizer's pad token onto the model's configs before wrapping it with PEFT, moves
    it to the device and (accelerate, bf16 on CUDA) wraps its ``forward`` in autocast with float32 outputs; the
    old same-process scorer scored that model, so this one builds the same to give the same scores.
    """
    from peft import get_peft_model

    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    policy = get_peft_model(model, lora_config(request))
    if uses_cuda(request):
        policy.to("cuda")
    if uses_bf16(request):
        from accelerate.utils import convert_outputs_to_fp32

        forward = torch.autocast(device_type="cuda", dtype=torch.bfloat16)(type(policy).forward)
        policy.forward = MethodType(convert_outputs_to_fp32(forward), policy)
    return policy


def read_adapter(path: str, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file at ``path``, checked against ``expected`` (the fresh adapter's).

    Raises ``InvalidAdapter`` naming the first problem: a missing or oversized file, bytes that are not
    safetensors, a tensor name missing or unexpected, a shape or a dtype that differs.
    """
    from safetensors.torch import load

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InvalidAdapter(f"no adapter file ({exc.strerror or exc})") from None
    bound = adapter_size_bound(expected)
    if size > bound:
        raise InvalidAdapter(f"the adapter file has {size} bytes, more than the {bound} its tensors can take")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for malformed bytes
        raise InvalidAdapter(f"not a safetensors file ({type(exc).__name__}: {str(exc)[:200]})") from None
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise InvalidAdapter(
            f"tensor names differ from the LoRA configuration's: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise InvalidAdapter(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
        if not tensor.is_floating_point():
            raise InvalidAdapter(f"{name} has dtype {tensor.dtype}, expected a floating-point dtype")
    return tensors


def _result(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, **fields}


def task_and_reference(request: dict[str, Any]) -> tuple[Task, Any, Any]:
    """The set-up the training and the scoring process share: threads, the task, the seed, the reference model
    and its tokenizer. Raises ``TaskError`` for bad task input."""
    from transformers import set_seed

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if request.get("threads"):
        torch.set_num_threads(request["threads"])
    task = get_task(
        request["task"], request["options"], cache_dir=request["cache_dir"], eval_samples=request["eval_samples"]
    )
    set_seed(request["seed"])
    model, tokenizer = task.reference()
    return task, model, tokenizer


def score_adapter(request: dict[str, Any], adapter_path: str | None) -> dict[str, Any]:
    """Score the reference with the adapter at ``adapter_path`` (None: the untrained reference); JSON-able."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    try:
        task, model, tokenizer = task_and_reference(request)
        if adapter_path is not None:
            # What the training set-up loaded before its lock-down (an hf task reads its dataset split here),
            # so that scoring under the lock-down finds it loaded, as it did in the training process.
            task.preference_data()
            policy = _as_trained(model, tokenizer, request)
            expected = get_peft_model_state_dict(policy)
        else:
            policy = model  # the untrained reference itself
    except TaskError as exc:
        return _result("input_error", error=str(exc))

    isolation = apply_runtime_protections(Limits(**request["limits"]))
    if adapter_path is not None:
        try:
            tensors = read_adapter(adapter_path, expected)
        except InvalidAdapter as exc:
            return _result("invalid_adapter", error=str(exc))
        bad = next((name for name, tensor in tensors.items() if not bool(torch.isfinite(tensor).all())), None)
        if bad is not None:
            return _result("diverged", error=f"the trained adapter has non-finite values in {bad}")
        loaded = set_peft_model_state_dict(policy, tensors)
        if loaded.unexpected_keys:
            return _result("invalid_adapter", error=f"PEFT did not use {sorted(loaded.unexpected_keys)[:3]}")
    policy.eval()

    start = time.perf_counter()
    try:
        if getattr(task, "scores_in_parent", False):
            # A task whose scoring needs the network (the judge): generate here, grade in the parent.
            collected = task.collect(policy, tokenizer, seed=request["seed"])  # type: ignore[attr-defined]
            return _result("collected", collected=collected, evaluation=time.perf_counter() - start)
        scored = task.score(policy, tokenizer, seed=request["seed"])
    except TaskError as exc:  # the task's own data cannot be scored (e.g. every prompt too long)
        return _result("input_error", error=str(exc))
    evaluation = time.perf_counter() - start
    metrics = {k: float(v) for k, v in scored.metrics.items()}
    if not math.isfinite(scored.score):
        return _result("diverged", error=f"the task score is {scored.score}", metrics=metrics, evaluation=evaluation)
    return _result("ok", score=float(scored.score), metrics=metrics, evaluation=evaluation, isolation=isolation)


__all__ = ["InvalidAdapter", "adapter_size_bound", "lora_config", "read_adapter", "score_adapter", "uses_cuda"]
