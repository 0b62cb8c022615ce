"""Evaluating a retrained model: held-out preference accuracy and margins, and the MT-Bench-style judge.

The trained output is loaded back from its directory (``load_trained``: the base model with the saved
adapter under LoRA, the saved model otherwise), so what is evaluated is what was written. A base model given
as a GGUF file is read from its converted checkpoint (:func:`lossforge.evaluate.model_source.resolve_model`).

- ``preference_metrics``: the ``hf`` task's scoring (:class:`lossforge.evaluate.tasks.hf.HFTask`: TRL's
  tokenization, summed completion log-probs, ``margin = (pc - rc) - (pr - rr)``, ties count half) on the
  retrain's held-out pairs instead of the task's own split. The reference is the base model: the adapter
  disabled under LoRA, the base checkpoint reloaded otherwise. Metrics ``pref_accuracy``, ``margin``,
  ``chosen_logratio``, ``rejected_logratio``, ``n_eval``.
- ``judge_metrics``: the ``judge`` task (:class:`lossforge.evaluate.tasks.judge.JudgeTask`): answers to a
  question file graded 1-10 through the OpenAI-compatible client, ``[[rating]]`` parsed (MT-Bench,
  arXiv 2306.05685); metrics ``judge_score``, ``n_judged``, ``judge_failures``...
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossforge.evaluate.tasks.hf import HFTask
from lossforge.evaluate.tasks.hf_data import Row

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class HeldOutPairs(HFTask):
    """The ``hf`` task scoring a policy on given held-out pairs (the retrain's split, not the task's own)."""

    def __init__(
        self,
        model: str,
        dataset: str,
        held_out: list[Row],
        *,
        max_length: int,
        batch_size: int,
        eval_samples: int | None = None,
    ) -> None:
        options = {"model": model, "dataset": dataset, "max_length": max_length, "eval_batch_size": batch_size}
        super().__init__(options, eval_samples=eval_samples)
        self.held_out = held_out

    def eval_rows(self) -> list[Row]:
        return self.held_out[: self.eval_samples] if self.eval_samples else self.held_out


def evaluation_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """transformers' progress bars ("Loading weights") and its deprecation warnings off for the block.

    The console of ``lossforge retrain`` says what the user acts on (the ranks' lines, one training progress
    line, notes and warnings of our own); what the libraries print about their own upgrades is noise there.
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def load_trained(out: Path, base_model: str, *, lora: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The trained policy from ``out`` and its tokenizer, in float32 on the GPU where there is one.

    float32, not bf16, because the held-out margins are differences of summed log-probs: in bf16 their rounding
    noise (tenths of a nat over a few hundred tokens) is as large as the margins a short training moves, and
    the reference (``HFTask.reference``) is float32 too.
    """
    import torch
    from lossforge.evaluate.model_source import resolve_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = evaluation_device()
    dtype = torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if lora:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(resolve_model(base_model), dtype=dtype)
        policy: Any = PeftModel.from_pretrained(base, str(out))
    else:
        policy = AutoModelForCausalLM.from_pretrained(str(out), dtype=dtype)
    return policy.to(device).eval(), tokenizer


def preference_metrics(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    model: str,
    dataset: str,
    held_out: list[Row],
    max_length: int,
    batch_size: int,
    eval_samples: int | None = None,
) -> dict[str, float]:
    """Held-out preference accuracy and margins of ``policy`` against the base ``model``."""
    task = HeldOutPairs(
        model, dataset, held_out, max_length=max_length, batch_size=batch_size, eval_samples=eval_samples
    )
    return dict(task.score(policy, tokenizer, seed=0).metrics)


def judge_task(options: dict[str, Any], *, model: str, dataset: str) -> Any:
    """The ``judge`` task for ``options`` (``questions``, ``judge_model``, ``judge_base_url``, ...), validated:
    its question file is read here, so a bad one fails before any training."""
    from lossforge.evaluate.tasks.judge import JudgeTask

    task = JudgeTask({**options, "model": model, "dataset": dataset})
    task.load_questions()
    return task


def judge_metrics(
    task: Any, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, seed: int
) -> dict[str, float]:
    """The judge's grades of ``policy``'s answers (``JudgeTask.score``: generate, then grade)."""
    scored = task.score(policy, tokenizer, seed=seed)
    return {name: float(value) for name, value in scored.metrics.items()}


__all__ = ["HeldOutPairs", "judge_metrics", "judge_task", "load_trained", "preference_metrics"]
