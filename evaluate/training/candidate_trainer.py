"""``CandidateDPOTrainer``: TRL's ``DPOTrainer`` whose per-pair loss is a candidate function.

TRL 1.x has no loss callback (the overridable ``dpo_loss`` was removed in v0.29), so the one plug point is
``compute_loss``. Everything else stays TRL's: tokenization (``_prepare_dataset``), collation
(``DataCollatorForPreference``), PEFT wrapping, the fused LM head, ``self._metrics`` and ``log``.

The override computes, per batch of B pairs (the collator stacks ``[chosen; rejected]`` into 2B rows):

    log pi(y|x) = sum_t log pi(y_t | x, y_<t)            summed over completion tokens, as TRL's sigmoid loss
    L = mean_i loss(pi_c_i, pi_r_i, ref_c_i, ref_r_i, beta[, chosen_lengths=|y_c|_i, rejected_lengths=|y_r|_i])

where ``loss`` is the candidate. With ``loss = -log sigmoid(beta * rho)`` this is DPO (arXiv 2305.18290, Eq. 7)
and matches TRL's ``loss_type="sigmoid"`` step for step (``tests/evaluate/training/test_candidate_trainer.py``).

Reference log-probs come from the batch (``ref_chosen_logps``/``ref_rejected_logps`` columns, attached by
``lossforge.evaluate.training.reference_cache`` or by TRL's own ``precompute_ref_log_probs``) when present; otherwise a
reference forward pass runs per step through TRL's ``compute_ref_log_probs`` (adapter disabled under PEFT).

Written for ``trl>=1.16,<1.17`` (pinned in ``pyproject.toml``); ``tests/evaluate/training/test_candidate_trainer.py``
fails if the plug point or the batch keys it relies on move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from lossforge.evaluate.contract import CandidateError, LogpBatch, call_loss, describe_error
from transformers import TrainerCallback
from trl import DPOTrainer

if TYPE_CHECKING:
    from lossforge.candidates import LossFn
    from transformers import TrainerControl, TrainerState, TrainingArguments

# Batch keys this override reads; a TRL release that renames them breaks the test that checks this list.
BATCH_KEYS = ("input_ids", "attention_mask", "completion_mask")
REFERENCE_KEYS = ("ref_chosen_logps", "ref_rejected_logps")
_NON_MODEL_KEYS = frozenset({"completion_mask", *REFERENCE_KEYS})


class DivergedError(RuntimeError):
    """The loss or a gradient became non-finite: the run stops with status ``diverged``."""


class FiniteGradientGuard(TrainerCallback):
    """Stops training before the optimizer applies a non-finite gradient.

    Runs at ``on_pre_optimizer_step``, i.e. after backward and clipping (clipping keeps NaN as NaN), so a NaN
    never reaches the LoRA weights.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        grads = [p.grad for p in self.model.parameters() if p.requires_grad and p.grad is not None]
        if not grads:
            return
        # One fused reduction instead of one device sync per parameter.
        norms = torch.stack(torch._foreach_norm(grads))  # (n_params,)
        if not bool(torch.isfinite(norms).all()):
            raise DivergedError(f"non-finite gradient at step {state.global_step + 1}")


def use_pytorch_kernels() -> None:
    """Make TRL fold its fused LM head's tiles with PyTorch operations instead of Triton kernels, in this process.

    Triton compiles a kernel at its first call and again for each new specialisation, writing a cache directory
    and running ``ptxas`` in a subprocess; a locked-down worker refuses both. On an H200 the first training
    failed so ("the sandbox refuses os.mkdir"), and a forward and backward pass before the lock-down did not
    compile every kernel the training step then asked for. TRL's PyTorch fold computes the same statistics on the
    same ``[tokens, vocabulary chunk]`` tiles (the full logits are never materialised either way); on CPU it is
    the path TRL always takes. ``tests/evaluate/training/test_candidate_trainer.py`` fails if the switches this
    flips move.
    """
    import trl.trainer.utils as trl_utils
    from trl.kernels import chunked_logprob

    chunked_logprob._TRITON_AVAILABLE = False  # read by _use_triton(): the fused LM head and its backward
    trl_utils.is_triton_available = lambda *args, **kwargs: False  # selective_log_softmax and its relatives


class CandidateDPOTrainer(DPOTrainer):
    """A ``DPOTrainer`` whose per-pair loss is ``loss_fn``; all other arguments are ``DPOTrainer``'s.

    ``loss_fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
    beta)`` takes four ``(B,)`` tensors of summed completion log-probs and returns ``(B,)`` per-pair losses; a
    loss that also names ``chosen_lengths`` and ``rejected_lengths`` gets the completion token counts.
    ``step_losses`` holds the mean loss of every training step, in order.
    """

    def __init__(self, *args: Any, loss_fn: LossFn, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refuse_unsupported_options()
        self.loss_fn = loss_fn
        self.step_losses: list[float] = []
        self.add_callback(FiniteGradientGuard(self.model))

    def _refuse_unsupported_options(self) -> None:
        # The override replaces TRL's loss selection; options that change that selection would be silently
        # ignored, so they fail here, at construction, with the value that was set.
        args = self.args
        unsupported = {
            "ld_alpha": (args.ld_alpha, None),
            "use_weighting": (args.use_weighting, False),
            "f_divergence_type": (args.f_divergence_type, "reverse_kl"),
            "loss_weights": (args.loss_weights, None),
            "loss_type": (args.loss_type, ["sigmoid"]),
            "label_smoothing": (args.label_smoothing, 0.0),
        }
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"CandidateDPOTrainer does not support {name}={value!r}: the candidate function is the whole "
                    f"loss. Leave {name} at {default!r}."
                )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        mode = "train" if self.model.training else "eval"
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]  # (2B, T)
        shift_completion_mask = completion_mask[..., 1:]  # (2B, T-1)
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)  # (2B, T)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = shift_completion_mask.size(1)
        # Prompt-learning PEFT prepends virtual tokens; keep the positions of the real tokens.
        per_token_logps = outputs.log_probs[:, -seq_len:]  # (2B, T-1), 0 outside the completion
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)  # (B,), (B,)
        # Completion tokens scored per sequence, after truncation: the lengths a length-aware loss receives.
        chosen_lengths, rejected_lengths = shift_completion_mask.sum(dim=1).to(chosen_logps.dtype).chunk(2, dim=0)

        if all(key in inputs for key in REFERENCE_KEYS):
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(model, inputs)  # (B,), (B,)

        batch = LogpBatch(
            chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_lengths, rejected_lengths
        )  # each (B,)
        losses = self._candidate_losses(batch)
        loss = losses.mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
        if not bool(torch.isfinite(loss.detach())):
            raise DivergedError(f"non-finite loss ({loss.item()}) at step {self.state.global_step + 1}")
        if mode == "train":
            self.step_losses.append(loss.item())

        self._record_metrics(mode, inputs, outputs, shift_completion_mask, seq_len)
        self._record_rewards(mode, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    def _candidate_losses(self, batch: LogpBatch) -> torch.Tensor:
        try:
            losses = call_loss(self.loss_fn, batch, self.beta)  # (B,)
        except CandidateError:
            raise
        except Exception as exc:  # the candidate's own failure, reported as such rather than as a crash
            raise CandidateError(f"the candidate raised {describe_error(exc)}") from exc
        if not losses.requires_grad and self.model.training:
            raise CandidateError("the candidate's losses do not depend on the policy log-probs (no gradient)")
        return losses

    def _record_metrics(
        self,
        mode: str,
        inputs: dict[str, torch.Tensor],
        outputs: Any,
        shift_completion_mask: torch.Tensor,
        seq_len: int,
    ) -> None:
        """TRL's token-level metrics (entropy, token counts, mean logits, token accuracy), same names."""
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        mask = shift_completion_mask.bool()  # (2B, T-1)
        total_tokens = gather(mask.sum()).sum()
        entropy_sum = gather((outputs.entropy[:, -seq_len:].detach() * mask).sum()).sum()
        metrics["entropy"].append((entropy_sum / total_tokens).item() if total_tokens > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

        chosen_mask, rejected_mask = mask.chunk(2, dim=0)  # (B, T-1) each
        chosen_mean_logits, rejected_mean_logits = outputs.mean_logits[:, -seq_len:].chunk(2, dim=0)
        for name, values, part in (
            ("logits/chosen", chosen_mean_logits, chosen_mask),
            ("logits/rejected", rejected_mean_logits, rejected_mask),
        ):
            count = gather(part.sum()).sum().item()
            metrics[name].append(gather(values[part].sum()).sum().item() / count if count > 0 else 0.0)
        chosen_is_top1, _ = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)
        correct = gather((chosen_is_top1 & chosen_mask).sum()).sum()
        count = gather(chosen_mask.sum()).sum()
        metrics["mean_token_accuracy"].append((correct / count).item() if count > 0 else 0.0)

    def _record_rewards(
        self,
        mode: str,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        ref_chosen_logps: torch.Tensor,
        ref_rejected_logps: torch.Tensor,
    ) -> None:
        """DPO's implicit rewards r = beta * (log pi - log ref) and their margins, whatever the candidate."""
        gather = self.accelerator.gather
        metrics = self._metrics[mode]
        chosen_rewards = self.beta * (chosen_logps - ref_chosen_logps).detach()  # (B,)
        rejected_rewards = self.beta * (rejected_logps - ref_rejected_logps).detach()  # (B,)
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())


__all__ = ["BATCH_KEYS", "REFERENCE_KEYS", "CandidateDPOTrainer", "CandidateError", "DivergedError"]
