"""Library losses equal TRL's own implementation wherever TRL 1.16 has the same loss.

TRL 1.x has no standalone loss function, so the comparison goes through ``DPOTrainer.compute_loss`` on a
tiny Llama (built from a config, tokenizer built locally) with a separate, differently initialised
reference model, so the log-ratio margins are far from zero and span both signs. The per-pair log-probs fed
to our candidate are read back through TRL's own ``compute_ref_log_probs`` (cross-checked once against a
hand-written log-softmax gather), so both sides see exactly the same numbers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from lossforge.candidates import load_builtin
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer

# beta * rho spans about [-4, 4] on this batch: the hinge's kink at 1, LRML's two regimes and both signs of the
# margin are all exercised.
BETA = 0.25

WORDS = [
    "<pad>", "<eos>", "<unk>", "the", "movie", "was", "good", "bad", "great", "awful", "fine", "plot", "acting", "i",
    "liked", "hated", "it", "very",
]  # fmt: skip

PAIRS = {
    "prompt": ["the movie was", "i liked the plot", "the acting was", "i hated it", "the plot was very", "it was"],
    "chosen": [" good", " very good", " great", " very awful", " fine", " good acting"],
    "rejected": [" bad", " awful", " bad bad", " fine", " awful plot", " bad"],
}

# Our candidate name -> (TRL loss_type, extra DPOConfig arguments built from the candidate's own constants).
TRL_EQUIVALENTS: dict[str, tuple[str, Callable[[Any], dict[str, float]]]] = {
    "dpo": ("sigmoid", lambda module: {}),
    "hinge": ("hinge", lambda module: {}),
    "robust_dpo": ("robust", lambda module: {"label_smoothing": module.EPSILON}),
    "exo_pair": ("exo_pair", lambda module: {"label_smoothing": module.EPSILON}),
    "nca_pair": ("nca_pair", lambda module: {}),
    "bco_pair": ("bco_pair", lambda module: {}),
    "sppo_hard": ("sppo_hard", lambda module: {}),
    "apo_zero": ("apo_zero", lambda module: {}),
    "apo_down": ("apo_down", lambda module: {}),
    "lrml": ("discopop", lambda module: {"discopop_tau": module.TAU}),
}


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: index for index, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _tiny_llama(seed: int) -> LlamaForCausalLM:
    # A wide initialisation makes policy and reference disagree by several nats per completion.
    config = LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, initializer_range=0.5,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _trainer(loss_type: str, extra: dict[str, float], output_dir: Path) -> DPOTrainer:
    args = DPOConfig(
        output_dir=str(output_dir), report_to="none", use_cpu=True, loss_type=[loss_type], beta=BETA,
        per_device_train_batch_size=len(PAIRS["prompt"]), per_device_eval_batch_size=len(PAIRS["prompt"]),
        bf16=False, dataset_num_proc=None, **extra,  # float32: TRL defaults to bf16 autocast, even on CPU
    )  # fmt: skip
    # Fresh models per trainer: DPOTrainer patches the model's forward (fused LM head) in place.
    return DPOTrainer(
        model=_tiny_llama(seed=0), ref_model=_tiny_llama(seed=1), args=args,
        train_dataset=Dataset.from_dict(PAIRS), processing_class=_tokenizer(),
    )  # fmt: skip


def _logps(trainer: DPOTrainer, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Summed completion log-probs (policy chosen, policy rejected, reference chosen, reference rejected)."""
    policy_chosen_logps, policy_rejected_logps = trainer.compute_ref_log_probs(trainer.model, batch)
    reference_chosen_logps, reference_rejected_logps = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    return policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps


def _collate(trainer: DPOTrainer, indices: list[int]) -> dict[str, torch.Tensor]:
    return trainer.data_collator([trainer.train_dataset[index] for index in indices])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trl-equality")


def test_read_back_logps_match_a_manual_gather(output_dir: Path) -> None:
    """The log-probs we feed our candidates are the summed completion log-probs, computed independently here."""
    trainer = _trainer("sigmoid", {}, output_dir)
    batch = _collate(trainer, list(range(len(PAIRS["prompt"]))))
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        token_logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (2B, T-1, V)
        next_tokens = batch["input_ids"][:, 1:]  # (2B, T-1)
        picked = token_logps.gather(-1, next_tokens.unsqueeze(-1)).squeeze(-1)  # (2B, T-1)
        manual_logps = (picked * batch["completion_mask"][:, 1:]).sum(dim=1)  # (2B,)
        policy_chosen_logps, policy_rejected_logps, _, _ = _logps(trainer, batch)
    torch.testing.assert_close(torch.cat([policy_chosen_logps, policy_rejected_logps]), manual_logps)


@pytest.mark.parametrize("name", sorted(TRL_EQUIVALENTS))
def test_candidate_equals_trl_loss(name: str, output_dir: Path) -> None:
    candidate = load_builtin(name)
    module = importlib.import_module(f"lossforge.candidates.{name}")
    loss_type, extra = TRL_EQUIVALENTS[name]
    trainer = _trainer(loss_type, extra(module), output_dir / name)
    count = len(PAIRS["prompt"])
    with torch.no_grad():
        batch = _collate(trainer, list(range(count)))
        trl_loss = trainer.compute_loss(trainer.model, batch)
        logps = _logps(trainer, batch)
        margins = BETA * ((logps[0] - logps[2]) - (logps[1] - logps[3]))  # (B,)
        ours = candidate.fn(*logps, BETA)  # (B,)
        assert ours.shape == (count,)
        torch.testing.assert_close(ours.mean(), trl_loss, rtol=1e-5, atol=1e-5)
        # Per pair too: a batch of one makes TRL's mean that pair's own loss.
        for index in range(count):
            single = _collate(trainer, [index])
            torch.testing.assert_close(candidate.fn(*_logps(trainer, single), BETA), trainer.compute_loss(
                trainer.model, single
            ).reshape(1), rtol=1e-5, atol=1e-5)  # fmt: skip
    # The comparison is only meaningful if the batch covers both signs of the margin and the hinge's kink.
    assert margins.min() < -1 and margins.max() > 1
