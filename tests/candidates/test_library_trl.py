"""Library losses equal TRL's own implementation wherever TRL 1.16 has the same loss.

TRL 1.x has no standalone loss function, so the comparison goes through ``DPOTrainer.compute_loss`` on a
tiny Llama (built from a config, tokenizer built locally) with a separate, differently initialised
reference model, so the log-ratio margins are far from zero and span both signs. The per-pair log-probs fed
to our candidate are read back through TRL's own ``compute_ref_log_probs`` (cross-checked once against a
hand-written log-softmax gather), so both sides see exactly the same numbers. Length-aware candidates get the
token counts our trainer passes (the shifted completion mask, ``CandidateDPOTrainer.compute_loss``).

The reference-free losses live in TRL's experimental trainers: ``simpo`` and ``cpo`` are compared with
``trl.experimental.cpo.CPOTrainer``, ``orpo`` with ``trl.experimental.orpo.ORPOTrainer``, each on its own
tokenization, our candidate fed the summed log-probs and token counts read from that trainer's own functions.
Where TRL's NLL term is a token mean over the whole batch (DPOTrainer's "sft" for ``rpo``, CPOTrainer's
``cpo_alpha`` term) and ours is each pair's own mean, equality is asserted per pair and on batches whose chosen
completions have equal lengths, and the mixed-batch difference is pinned down as exactly that weighting.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from lossforge.candidates import Candidate, load_builtin
from lossforge.evaluate.contract import LogpBatch, call_loss
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer
from trl.experimental.cpo import CPOConfig, CPOTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

# beta * rho spans about [-4, 4] on this batch: the hinge's kink at 1, LRML's two regimes and both signs of the
# margin are all exercised.
BETA = 0.25

WORDS = [
    "<pad>",
    "<eos>",
    "<unk>",
    "the",
    "movie",
    "was",
    "good",
    "bad",
    "great",
    "awful",
    "fine",
    "plot",
    "acting",
    "i",
    "liked",
    "hated",
    "it",
    "very",
]

PAIRS = {
    "prompt": ["the movie was", "i liked the plot", "the acting was", "i hated it", "the plot was very", "it was"],
    "chosen": [" good", " very good", " great", " very awful", " fine", " good acting"],
    "rejected": [" bad", " awful", " bad bad", " fine", " awful plot", " bad"],
}

# Our candidate name -> (TRL loss_type list, extra DPOConfig arguments built from the candidate's own constants;
# they may override beta).
TRL_EQUIVALENTS: dict[str, tuple[list[str], Callable[[Any], dict[str, Any]]]] = {
    "dpo": (["sigmoid"], lambda module: {}),
    "hinge": (["hinge"], lambda module: {}),
    "robust_dpo": (["robust"], lambda module: {"label_smoothing": module.EPSILON}),
    "exo_pair": (["exo_pair"], lambda module: {"label_smoothing": module.EPSILON}),
    "nca_pair": (["nca_pair"], lambda module: {}),
    "bco_pair": (["bco_pair"], lambda module: {}),
    "sppo_hard": (["sppo_hard"], lambda module: {}),
    "apo_zero": (["apo_zero"], lambda module: {}),
    "apo_down": (["apo_down"], lambda module: {}),
    "lrml": (["discopop"], lambda module: {"discopop_tau": module.TAU}),
    "aot": (["aot"], lambda module: {}),
    "aot_unpaired": (["aot_unpaired"], lambda module: {}),
    "ln_dpo": (["sigmoid_norm"], lambda module: {"beta": module.SCALE * BETA}),
    "rpo": (["sigmoid", "sft"], lambda module: {"loss_weights": [1.0, module.ALPHA]}),
}
# Losses whose TRL form has a batch token-mean NLL: the whole-batch comparison runs on sub-batches whose chosen
# completions have equal lengths (checked), where a token mean and a mean of per-pair means coincide.
TOKEN_MEAN_BATCHES: dict[str, list[list[int]]] = {"rpo": [[0, 2, 4], [1, 3, 5]]}
ALL_PAIRS = list(range(len(PAIRS["prompt"])))


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: index for index, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _tiny_llama(seed: int) -> LlamaForCausalLM:
    # A wide initialisation makes policy and reference disagree by several nats per completion.
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _trainer(loss_type: list[str], extra: dict[str, Any], output_dir: Path) -> DPOTrainer:
    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "use_cpu": True,
        "loss_type": loss_type,
        "beta": BETA,
        "per_device_train_batch_size": len(PAIRS["prompt"]),
        "per_device_eval_batch_size": len(PAIRS["prompt"]),
        "bf16": False,
        "dataset_num_proc": None,  # float32: TRL defaults to bf16 autocast, even on CPU
    }
    args = DPOConfig(**{**values, **extra})
    # Fresh models per trainer: DPOTrainer patches the model's forward (fused LM head) in place.
    return DPOTrainer(
        model=_tiny_llama(seed=0),
        ref_model=_tiny_llama(seed=1),
        args=args,
        train_dataset=Dataset.from_dict(PAIRS),
        processing_class=_tokenizer(),
    )


def _logps(trainer: DPOTrainer, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Summed completion log-probs (policy chosen, policy rejected, reference chosen, reference rejected)."""
    policy_chosen_logps, policy_rejected_logps = trainer.compute_ref_log_probs(trainer.model, batch)
    reference_chosen_logps, reference_rejected_logps = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    return policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps


def _lengths(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion tokens scored per sequence (the shifted completion mask), as CandidateDPOTrainer passes them."""
    chosen_lengths, rejected_lengths = batch["completion_mask"][:, 1:].sum(dim=1).float().chunk(2, dim=0)
    return chosen_lengths, rejected_lengths


def _ours(candidate: Candidate, trainer: DPOTrainer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Our per-pair losses on the batch, called the way the trainer calls them (lengths where the loss takes them)."""
    return call_loss(candidate.fn, LogpBatch(*_logps(trainer, batch), *_lengths(batch)), BETA)


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
    with torch.no_grad():
        everything = _collate(trainer, ALL_PAIRS)
        logps = _logps(trainer, everything)
        margins = BETA * ((logps[0] - logps[2]) - (logps[1] - logps[3]))  # (B,)
        assert _ours(candidate, trainer, everything).shape == (len(ALL_PAIRS),)
        for indices in TOKEN_MEAN_BATCHES.get(name, [ALL_PAIRS]):
            batch = _collate(trainer, indices)
            if name in TOKEN_MEAN_BATCHES:
                assert len(set(_lengths(batch)[0].tolist())) == 1, "the sub-batch's chosen lengths must be equal"
            trl_loss = trainer.compute_loss(trainer.model, batch)
            torch.testing.assert_close(_ours(candidate, trainer, batch).mean(), trl_loss, rtol=1e-5, atol=1e-5)
        # Per pair too: a batch of one makes TRL's mean that pair's own loss.
        for index in ALL_PAIRS:
            single = _collate(trainer, [index])
            trl_loss = trainer.compute_loss(trainer.model, single).reshape(1)
            torch.testing.assert_close(_ours(candidate, trainer, single), trl_loss, rtol=1e-5, atol=1e-5)
    # The comparison is only meaningful if the batch covers both signs of the margin and the hinge's kink.
    assert margins.min() < -1 and margins.max() > 1


def test_trl_sft_term_weights_each_pair_by_its_share_of_tokens(output_dir: Path) -> None:
    """On a batch of mixed chosen lengths TRL's "sigmoid" + "sft" is DPO plus the token-weighted mean of our
    per-pair NLLs; ``rpo`` takes their plain mean (per-pair, no coupling): exactly that weighting apart."""
    alpha = importlib.import_module("lossforge.candidates.rpo").ALPHA
    trainer = _trainer(["sigmoid", "sft"], {"loss_weights": [1.0, alpha]}, output_dir / "rpo-mixed")
    with torch.no_grad():
        batch = _collate(trainer, ALL_PAIRS)
        chosen_lengths, rejected_lengths = _lengths(batch)
        assert len(set(chosen_lengths.tolist())) > 1  # mixed lengths: the two conventions differ here
        logps = _logps(trainer, batch)
        dpo = load_builtin("dpo").fn(*logps, BETA)  # (B,)
        nll = -logps[0] / chosen_lengths  # (B,) each chosen completion's mean NLL
        token_weighted = (nll * chosen_lengths).sum() / chosen_lengths.sum()
        trl_loss = trainer.compute_loss(trainer.model, batch)
        torch.testing.assert_close(dpo.mean() + alpha * token_weighted, trl_loss, rtol=1e-5, atol=1e-5)
        ours = load_builtin("rpo").fn(*logps, BETA, chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths)
        torch.testing.assert_close(ours.mean(), dpo.mean() + alpha * nll.mean(), rtol=1e-6, atol=1e-6)
        assert abs(float(ours.mean() - trl_loss)) > 1e-3


# --------------------------------------------------------------- reference-free losses: TRL's CPO and ORPO trainers

ONE_TOKEN_PROMPTS = {
    "prompt": ["the", "it", "i", "the", "it", "i"],
    "chosen": [" movie was good", " was great", " liked it", " acting was very good", " was fine", " liked the plot"],
    "rejected": [" movie was bad", " was awful", " hated it", " plot", " was very bad", " hated the acting"],
}


def _cpo_trainer(output_dir: Path, **config: Any) -> CPOTrainer:
    args = CPOConfig(
        output_dir=str(output_dir),
        report_to="none",
        use_cpu=True,
        bf16=False,
        dataset_num_proc=None,
        per_device_train_batch_size=len(PAIRS["prompt"]),
        **config,
    )
    return CPOTrainer(
        model=_tiny_llama(seed=0), args=args, train_dataset=Dataset.from_dict(PAIRS), processing_class=_tokenizer()
    )


def _orpo_trainer(output_dir: Path, pairs: dict[str, list[str]], beta: float) -> ORPOTrainer:
    args = ORPOConfig(
        output_dir=str(output_dir),
        report_to="none",
        use_cpu=True,
        bf16=False,
        dataset_num_proc=None,
        beta=beta,
        per_device_train_batch_size=len(pairs["prompt"]),
    )
    return ORPOTrainer(
        model=_tiny_llama(seed=0), args=args, train_dataset=Dataset.from_dict(pairs), processing_class=_tokenizer()
    )


def _experimental_batch(trainer: CPOTrainer | ORPOTrainer, indices: list[int]) -> dict[str, Any]:
    return trainer.data_collator([trainer.train_dataset[index] for index in indices])


def _summed_logps_and_lengths(trainer: CPOTrainer | ORPOTrainer, batch: dict[str, Any]) -> LogpBatch:
    """Summed completion log-probs and token counts, through the trainer's own concatenation and gather.

    The reference inputs are set to garbage (+1000): reference-free losses must ignore them."""
    padding = trainer.pad_token_id if isinstance(trainer, CPOTrainer) else trainer.padding_value
    concatenated = trainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=padding)
    labels = concatenated["concatenated_labels"]  # (2B, T), -100 outside the completion
    logits = trainer.model(
        concatenated["concatenated_input_ids"], attention_mask=concatenated["concatenated_attention_mask"]
    ).logits  # (2B, T, V)
    summed = trainer.get_batch_logps(logits, labels, average_log_prob=False)  # (2B,)
    lengths = (labels[:, 1:] != -100).sum(dim=1).float()  # (2B,) the tokens TRL averages over
    (chosen, rejected), (chosen_lengths, rejected_lengths) = summed.chunk(2), lengths.chunk(2)
    garbage = torch.full_like(chosen, 1000.0)
    return LogpBatch(chosen, rejected, garbage, garbage, chosen_lengths, rejected_lengths)


def _trl_batch_loss(trainer: CPOTrainer | ORPOTrainer, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    return trainer.get_batch_loss_metrics(trainer.model, batch)


def test_simpo_equals_trl_cpo_trainer_simpo(output_dir: Path) -> None:
    module = importlib.import_module("lossforge.candidates.simpo")
    simpo_beta = module.SCALE * BETA
    trainer = _cpo_trainer(
        output_dir / "simpo",
        loss_type="simpo",
        beta=simpo_beta,
        simpo_gamma=module.GAMMA_RATIO * simpo_beta,
        cpo_alpha=0.0,
    )
    candidate = load_builtin("simpo")
    with torch.no_grad():
        for indices in [ALL_PAIRS, *([index] for index in ALL_PAIRS)]:
            batch = _experimental_batch(trainer, indices)
            inputs = _summed_logps_and_lengths(trainer, batch)
            trl_loss, _ = _trl_batch_loss(trainer, batch)
            torch.testing.assert_close(call_loss(candidate.fn, inputs, BETA).mean(), trl_loss, rtol=1e-5, atol=1e-5)
        everything = _summed_logps_and_lengths(trainer, _experimental_batch(trainer, ALL_PAIRS))
        # Mixed lengths, so the length normalization is exercised.
        assert everything.chosen_lengths is not None and len(set(everything.chosen_lengths.tolist())) > 1


def test_cpo_equals_trl_cpo_trainer_sigmoid(output_dir: Path) -> None:
    alpha = importlib.import_module("lossforge.candidates.cpo").ALPHA
    trainer = _cpo_trainer(output_dir / "cpo", loss_type="sigmoid", beta=BETA, cpo_alpha=alpha)
    candidate = load_builtin("cpo")
    with torch.no_grad():
        mixed = _summed_logps_and_lengths(trainer, _experimental_batch(trainer, ALL_PAIRS))
        assert mixed.chosen_lengths is not None
        chosen_lengths = mixed.chosen_lengths.tolist()
        equal_length_batches = [[i for i in ALL_PAIRS if chosen_lengths[i] == n] for n in sorted(set(chosen_lengths))]
        assert len(equal_length_batches) > 1 and all(len(b) > 1 for b in equal_length_batches)
        for indices in [*equal_length_batches, *([index] for index in ALL_PAIRS)]:
            batch = _experimental_batch(trainer, indices)
            trl_loss, _ = _trl_batch_loss(trainer, batch)
            ours = call_loss(candidate.fn, _summed_logps_and_lengths(trainer, batch), BETA)
            torch.testing.assert_close(ours.mean(), trl_loss, rtol=1e-5, atol=1e-5)
        # Mixed lengths: TRL's cpo_alpha term is the token-weighted mean of the per-pair NLLs.
        trl_loss, metrics = _trl_batch_loss(trainer, _experimental_batch(trainer, ALL_PAIRS))
        nll = -mixed.policy_chosen / mixed.chosen_lengths  # (B,)
        token_weighted = (nll * mixed.chosen_lengths).sum() / mixed.chosen_lengths.sum()
        torch.testing.assert_close(torch.tensor(metrics["nll_loss"]), token_weighted, rtol=1e-5, atol=1e-5)
        preference = -torch.nn.functional.logsigmoid(BETA * (mixed.policy_chosen - mixed.policy_rejected))  # (B,)
        ours = call_loss(candidate.fn, mixed, BETA)
        torch.testing.assert_close(ours.mean(), preference.mean() + alpha * nll.mean(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(preference.mean() + alpha * token_weighted, trl_loss, rtol=1e-5, atol=1e-5)


def test_orpo_odds_ratio_term_equals_trl_orpo_trainer(output_dir: Path) -> None:
    """TRL's ORPO NLL counts the prompt tokens, which the contract does not see; the odds-ratio term is equal."""
    trainer = _orpo_trainer(output_dir / "orpo", PAIRS, beta=BETA)
    candidate = load_builtin("orpo")
    with torch.no_grad():
        for indices in [ALL_PAIRS, *([index] for index in ALL_PAIRS)]:
            batch = _experimental_batch(trainer, indices)
            inputs = _summed_logps_and_lengths(trainer, batch)
            assert inputs.chosen_lengths is not None
            trl_loss, metrics = _trl_batch_loss(trainer, batch)
            trl_odds_ratio_term = trl_loss - metrics["nll_loss"]  # () lambda * mean(-log sigmoid(log odds ratio))
            ours = call_loss(candidate.fn, inputs, BETA) - (-inputs.policy_chosen / inputs.chosen_lengths)  # (B,)
            torch.testing.assert_close(ours.mean(), trl_odds_ratio_term, rtol=1e-5, atol=1e-5)


def test_orpo_equals_trl_orpo_trainer_for_one_token_prompts(output_dir: Path) -> None:
    """With a one-token prompt nothing of the prompt is scored, so TRL's NLL is the completion's: the whole loss
    is equal per pair (a batch of one makes TRL's token mean that pair's own mean)."""
    trainer = _orpo_trainer(output_dir / "orpo-one-token", ONE_TOKEN_PROMPTS, beta=BETA)
    candidate = load_builtin("orpo")
    with torch.no_grad():
        for index in range(len(ONE_TOKEN_PROMPTS["prompt"])):
            batch = _experimental_batch(trainer, [index])
            trl_loss, _ = _trl_batch_loss(trainer, batch)
            ours = call_loss(candidate.fn, _summed_logps_and_lengths(trainer, batch), BETA)
            torch.testing.assert_close(ours, trl_loss.reshape(1), rtol=1e-5, atol=1e-5)
