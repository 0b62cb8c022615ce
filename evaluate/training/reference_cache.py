"""Shared reference log-probs: computed once per (base model, dataset, tokenization), reused by every candidate.

The reference model is the same for every candidate of a task, so the summed completion log-probs
``log ref(y_w|x)`` and ``log ref(y_l|x)`` of the training pairs are computed once, stored under
``$LOSSFORGE_CACHE/reflogps/<key>.pt`` and attached to each candidate's (already tokenized) training set as
the ``ref_chosen_logps``/``ref_rejected_logps`` columns that ``CandidateDPOTrainer.compute_loss`` reads.
That removes one forward pass per training step (``benchmarks/bench_train.py`` measures the gain).

The key covers everything that determines the numbers: the task's own key (task, task seed, model, data),
the tokenized pairs themselves (so the tokenizer and the data), the truncation settings the collator applies,
the model config, a fingerprint of its weights, and the dtype and device type of the forward pass.
The values are computed with TRL's own ``compute_ref_log_probs`` and collator, so they are exactly what TRL's
per-step reference pass would produce, up to floating-point differences from batch padding.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from lossforge.evaluate.training.candidate_trainer import REFERENCE_KEYS
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from trl import DPOTrainer

TOKENIZED_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
CACHE_SUBDIR = "reflogps"


@dataclass(frozen=True)
class ReferenceLogps:
    """Summed completion log-probs of the reference model, one entry per training pair, and where they live."""

    chosen: torch.Tensor  # (N,)
    rejected: torch.Tensor  # (N,)
    path: Path
    cached: bool  # True when read from disk, False when computed by this call


def _weights_fingerprint(model: torch.nn.Module) -> str:
    # The first elements of every tensor tell two checkpoints of one architecture apart without reading
    # gigabytes; a full-weight hash (as TRL's `hash_module`) would cost seconds per candidate on a 1B model.
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if "lora_" in name:  # LoRA adapters are disabled for the reference pass
            continue
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _base_model(trainer: DPOTrainer) -> torch.nn.Module:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def reference_cache_key(trainer: DPOTrainer, task_key: str) -> str:
    """Hash of everything that determines the reference log-probs of ``trainer.train_dataset``."""
    dataset = trainer.train_dataset
    missing = [c for c in TOKENIZED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the trainer's dataset is not tokenized yet: missing columns {missing}")
    token_ids = dataset.select_columns(list(TOKENIZED_COLUMNS)).to_dict()  # {column: list of id lists}
    data_digest = hashlib.sha256(json.dumps(token_ids, sort_keys=True).encode())
    model = _base_model(trainer)
    args = trainer.args
    parts = {
        "task": task_key,
        "data": data_digest.hexdigest(),
        "max_length": args.max_length,
        "truncation_mode": args.truncation_mode,
        "padding_free": args.padding_free,
        "config": model.config.to_json_string(use_diff=False),
        "weights": _weights_fingerprint(model),
        "dtype": str(next(model.parameters()).dtype),
        "autocast": "bf16" if args.bf16 else ("fp16" if args.fp16 else "none"),
        "device": trainer.accelerator.device.type,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def compute_reference_logps(trainer: DPOTrainer, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs of every pair of ``trainer.train_dataset``, in dataset order: ``(N,)``, ``(N,)``.

    Uses TRL's collator and ``compute_ref_log_probs`` (PEFT adapters disabled), so the numbers are TRL's.
    """
    dataset = trainer.train_dataset.select_columns(list(TOKENIZED_COLUMNS))
    batch_size = batch_size or trainer.args.precompute_ref_batch_size or trainer.args.per_device_train_batch_size
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=trainer.data_collator, shuffle=False)
    device = trainer.accelerator.device
    was_training = trainer.model.training
    trainer.model.eval()  # dropout off, as in TRL's precompute (which runs before `train()` sets train mode)
    chosen, rejected = [], []
    try:
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)  # (b,), (b,)
            chosen.append(ref_chosen.float().cpu())
            rejected.append(ref_rejected.float().cpu())
    finally:
        trainer.model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def _save_atomic(path: Path, payload: dict[str, object]) -> None:
    # Several workers may fill the same key at once: write a private file, then rename over the target.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, tmp_name)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def load_or_compute(trainer: DPOTrainer, *, task_key: str, cache_dir: Path) -> ReferenceLogps:
    """The cached reference log-probs for this trainer's data and model, computing and storing them on a miss."""
    key = reference_cache_key(trainer, task_key)
    path = Path(cache_dir) / CACHE_SUBDIR / f"{key}.pt"
    n_rows = len(trainer.train_dataset)
    if path.exists():
        try:
            payload = torch.load(path, weights_only=True)
            if payload["chosen"].shape == (n_rows,) and payload["rejected"].shape == (n_rows,):
                return ReferenceLogps(payload["chosen"], payload["rejected"], path, cached=True)
        except (OSError, RuntimeError, KeyError, EOFError):
            pass  # a truncated or foreign file is recomputed and overwritten
    chosen, rejected = compute_reference_logps(trainer)
    _save_atomic(path, {"chosen": chosen, "rejected": rejected, "key": key})
    return ReferenceLogps(chosen, rejected, path, cached=False)


def attach_reference_logps(trainer: DPOTrainer, *, task_key: str, cache_dir: Path) -> ReferenceLogps:
    """Load or compute the shared reference log-probs and add them as columns to ``trainer.train_dataset``.

    ``CandidateDPOTrainer`` then reads them from each batch instead of running a reference forward pass.
    """
    ref = load_or_compute(trainer, task_key=task_key, cache_dir=cache_dir)
    dataset = trainer.train_dataset.remove_columns(
        [c for c in REFERENCE_KEYS if c in trainer.train_dataset.column_names]
    )
    dataset = dataset.add_column(REFERENCE_KEYS[0], ref.chosen.tolist())
    trainer.train_dataset = dataset.add_column(REFERENCE_KEYS[1], ref.rejected.tolist())
    return ref


__all__ = [
    "ReferenceLogps",
    "attach_reference_logps",
    "compute_reference_logps",
    "load_or_compute",
    "reference_cache_key",
]
