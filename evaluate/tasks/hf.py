"""The ``hf`` task: any causal LM and preference dataset; score = held-out preference accuracy or sampled reward.

Options (``HFTask.OPTIONS``): ``model`` (hub id, ``save_pretrained`` directory, or a GGUF model: a ``.gguf`` file,
or a directory or hub repository with ``gguf_file``, converted once, see :mod:`lossforge.evaluate.model_source`),
``dataset`` (hub id, ``.jsonl``/``.json``/``.parquet`` file or ``save_to_disk`` directory, standard or
conversational ``prompt/chosen/rejected``, see :mod:`lossforge.evaluate.tasks.hf_data`), ``split``,
``eval_fraction``, ``max_length``, ``eval_batch_size``, ``score`` and the options of ``score: reward`` (below).

Score ``pref_accuracy`` (no sampling; ``seed`` is unused). For each held-out pair the implied reward margin,
without beta (beta only scales it, and the sign is what accuracy counts): ``margin = (pc - rc) - (pr - rr)``
with ``pc, pr`` the policy's and ``rc, rr`` the reference's summed completion log-probs of the chosen and
rejected answers (DPO, arXiv 2305.18290, eq. 7). ``pref_accuracy`` is the share of pairs with ``margin > 0``.
A tie (``|margin| <= TIE_TOLERANCE`` nats) counts 0.5: an untrained policy (``--steps 0``, where the LoRA
adapter is still the identity) scores exactly 0.5, chance level, instead of 0 or 1 depending on rounding
noise. Metrics: ``pref_accuracy``, ``margin`` (mean), ``chosen_logratio`` and ``rejected_logratio`` (means of
``pc - rc`` and ``pr - rr``: whether the chosen answer gained likelihood or only lost less, the DPOP paper's
concern), ``n_eval``.

Score ``reward`` (:func:`lossforge.evaluate.tasks.generation.reward_scores`): the policy and the reference sample
``samples`` completions of each held-out prompt (``max_new_tokens``, ``temperature``; seeded by ``seed``), a
reward scores them (``reward: vader`` or a sequence-classification ``reward_model`` with ``reward_label``, see
:mod:`lossforge.evaluate.tasks.rewards`), and the score is the mean reward of the policy's samples. Metrics
``reward``, ``win_rate`` (against the reference's samples; ties count 0.5), ``kl`` (Monte-Carlo KL(pi_T ||
ref_T), nats per completion, as ``sentiment`` computes it), ``length`` (sampled tokens per completion),
``reference_reward``, ``n_samples``, ``n_eval``. Prompts longer than ``max_length - max_new_tokens`` are skipped.

Tokenization mirrors TRL's DPOTrainer (1.16), so the scored sequences are the ones trained on: standard
rows are ``prompt`` and ``prompt + completion + eos`` tokenized apart, conversational ones rendered with the
chat template; the completion starts where the two token lists diverge; sequences are cut to
``max_length`` from the end (``keep_start``); pairs whose prompt alone fills ``max_length`` are skipped.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lossforge.evaluate.model_source import model_identity, resolve_model
from lossforge.evaluate.tasks.base import Task, TaskError, TaskScore
from lossforge.evaluate.tasks.generation import GenerationSettings, on_reference, reward_scores
from lossforge.evaluate.tasks.hf_data import Row, dataset_identity, load_rows
from lossforge.evaluate.tasks.rewards import REWARDS, RewardSpec, local_files

if TYPE_CHECKING:
    import datasets
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

TIE_TOLERANCE = 1e-4  # nats; float32 noise on summed log-probs of a few hundred tokens stays well below
SCORES = ("pref_accuracy", "reward")


class HFTask(Task):
    """Preference accuracy of a trained policy on a held-out share of a Hugging Face preference dataset."""

    name: ClassVar[str] = "hf"
    description: ClassVar[str] = (
        "A causal language model is fine-tuned with LoRA on a preference dataset of prompt/chosen/rejected pairs."
    )
    objective_name: ClassVar[str] = "pref_accuracy"
    objective: ClassVar[str] = (
        "held-out preference accuracy: the share of held-out pairs whose chosen answer the trained policy "
        "prefers over the rejected one by implicit reward (ties count half); with the option score=reward, the "
        "mean reward of completions the policy samples for held-out prompts"
    )
    headline_metrics: ClassVar[tuple[str, ...]] = ("pref_accuracy", "margin")
    default_steps: ClassVar[int] = 200
    default_learning_rate: ClassVar[float] = 5e-5
    default_batch_size: ClassVar[int] = 8
    max_length: ClassVar[int] = 512
    # Options of the scoring rule, kept apart so that a subclass with a rule of its own can leave them out.
    SCORE_OPTIONS: ClassVar[dict[str, str]] = {
        "score": "'pref_accuracy' (default; no sampling) or 'reward' (mean reward of sampled completions)",
        "reward": f"built-in reward for score=reward: {', '.join(REWARDS)}",
        "reward_model": "sequence-classification reward model for score=reward: hub id or local directory",
        "reward_label": "the good label of reward_model (name or index), needed when it has several",
        "temperature": "sampling temperature for score=reward (default 1.0)",
        "max_new_tokens": "most tokens sampled per completion for score=reward (default 48)",
        "samples": "completions sampled per held-out prompt for score=reward (default 1)",
    }
    OPTIONS: ClassVar[dict[str, str]] = {
        "model": "hub id, local save_pretrained directory or .gguf file of the causal LM (required)",
        "dataset": "hub id, local .jsonl/.json/.parquet file or save_to_disk directory (required)",
        "split": "dataset split (default 'train')",
        "eval_fraction": "share of pairs held out for scoring, in (0, 1) (default 0.1)",
        "max_length": "tokens per prompt + completion (default 512)",
        "eval_batch_size": "sequences per forward pass when scoring (default 8)",
        "gguf_file": "GGUF file inside model (a local directory or hub repository), converted once to float",
        **SCORE_OPTIONS,
    }

    def __init__(self, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        for required in ("model", "dataset"):
            if not isinstance(self.options.get(required), str) or not self.options[required]:
                raise TaskError(f"task '{self.name}' needs option '{required}': {self.OPTIONS[required]}")
        self.model_id: str = self.options["model"]
        self.dataset: str = self.options["dataset"]
        self.split = str(self.options.get("split", "train"))
        self.eval_fraction = number_option(self.options, "eval_fraction", 0.1, float)
        if not 0.0 < self.eval_fraction < 1.0:
            raise TaskError(f"option eval_fraction must be in (0, 1), got {self.eval_fraction}")
        # The instance value shadows the class default that the training engine also reads.
        self.max_length = number_option(self.options, "max_length", type(self).max_length, int)  # type: ignore[misc]
        self.eval_batch_size = number_option(self.options, "eval_batch_size", 8, int)
        for name in ("max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise TaskError(f"option {name} must be a positive integer, got {getattr(self, name)}")
        gguf_file = self.options.get("gguf_file")
        self.gguf_file: str | None = None if gguf_file is None else str(gguf_file)
        self.generation = GenerationSettings(
            temperature=number_option(self.options, "temperature", 1.0, float),
            max_new_tokens=number_option(self.options, "max_new_tokens", 48, int),
            samples=number_option(self.options, "samples", 1, int),
            batch_size=self.eval_batch_size,
        )
        self.reward_spec: RewardSpec | None = None  # set for score=reward
        self._check_score_options()
        self._reward_files: str | None = None  # the reward model's local directory, fetched by reference()

    # the Task interface ----------------------------------------------------------------------------
    def cache_key(self) -> str:
        config = {k: v for k, v in self.model_config.to_dict().items() if not k.startswith("_")}
        config.pop("transformers_version", None)
        payload = {
            "task": self.name,
            "model": self._model_location(),
            "config": config,
            "dataset": dataset_identity(self.dataset, self.split),
            "eval_fraction": self.eval_fraction,
            "max_length": self.max_length,
            "task_seed": self.task_seed,
            **self._score_key(),
            **self._extra_key(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def reference(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        self.model_config  # noqa: B018 - fails with the clear "not found" message before the heavy load
        if self.reward_spec is not None and self.reward_spec.model and self._reward_files is None:
            # Fetched here, in the set-up every training and scoring process runs before it is locked down
            # without network; score() then only reads the files.
            self._reward_files = local_files(self.reward_spec.model)
        return load_causal_lm(self.model_id, self.gguf_file)

    def preference_data(self) -> datasets.Dataset:
        import datasets

        train, _ = self._split
        return datasets.Dataset.from_list(train)

    def score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, seed: int) -> TaskScore:
        """``pref_accuracy``: deterministic, ``seed`` unused; ``reward``: samples drawn with ``seed``."""
        if self.reward_spec is not None:
            return self._reward_score(policy, tokenizer, self.reward_spec, seed)
        rows = self.eval_rows()
        encoded = [pair for pair in (encode_pair(tokenizer, row, self.max_length) for row in rows) if pair]
        if not encoded:
            raise TaskError(f"every held-out prompt fills max_length={self.max_length} tokens; raise max_length")
        was_training = policy.training
        policy.eval()
        try:
            policy_logps = completion_logps(policy, tokenizer, encoded, batch_size=self.eval_batch_size)
            reference_logps = self._reference_logps(policy, tokenizer, encoded)
        finally:
            policy.train(was_training)
        logratios = policy_logps - reference_logps  # (N, 2): chosen, rejected
        margins = logratios[:, 0] - logratios[:, 1]  # (N,)
        wins = (margins > TIE_TOLERANCE).double() + 0.5 * (margins.abs() <= TIE_TOLERANCE).double()
        accuracy = float(wins.mean())
        return TaskScore(
            score=accuracy,
            metrics={
                "pref_accuracy": accuracy,
                "margin": float(margins.mean()),
                "chosen_logratio": float(logratios[:, 0].mean()),
                "rejected_logratio": float(logratios[:, 1].mean()),
                "n_eval": float(len(encoded)),
            },
        )

    # helpers shared with subclasses ----------------------------------------------------------------
    def eval_rows(self) -> list[Row]:
        """The held-out pairs (capped by ``eval_samples``)."""
        _, held_out = self._split
        return held_out[: self.eval_samples] if self.eval_samples else held_out

    @cached_property
    def model_config(self) -> PretrainedConfig:
        return causal_lm_config(self.model_id, self.gguf_file)

    def _extra_key(self) -> dict[str, Any]:
        """Subclasses add what else determines their data."""
        return {}

    def _model_location(self) -> str:
        return model_identity(self.model_id, self.gguf_file)

    def _check_score_options(self) -> None:
        """Refuse score settings that are missing, contradictory or would be ignored, naming the option."""
        given = [name for name in self.SCORE_OPTIONS if name in self.options]
        if type(self).score is not HFTask.score:  # a subclass with a scoring rule of its own (judge) reads its own
            given = [name for name in given if name not in ("temperature", "max_new_tokens")]  # also the judge's
            if given:
                raise TaskError(
                    f"task '{self.name}' has its own scoring rule; option(s) {', '.join(given)} apply to 'hf'"
                )
            return
        score = self.options.get("score", "pref_accuracy")
        if score not in SCORES:
            raise TaskError(f"option score must be one of {', '.join(SCORES)}, got {score!r}")
        if score == "pref_accuracy":
            if [name for name in given if name != "score"]:
                raise TaskError(f"option(s) {', '.join(n for n in given if n != 'score')} apply only with score=reward")
            return
        self.reward_spec = RewardSpec(
            self.options.get("reward"), self.options.get("reward_model"), self.options.get("reward_label")
        )
        self.generation.check(self.max_length)

    def _score_key(self) -> dict[str, Any]:
        """What the reward scoring adds to the cache key (nothing for ``pref_accuracy``: its keys stay as they were)."""
        if self.reward_spec is None:
            return {}
        return {"score": {"kind": "reward", "reward": self.reward_spec.identity(), **asdict(self.generation)}}

    def _reward_score(
        self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: RewardSpec, seed: int
    ) -> TaskScore:
        budget = self.max_length - self.generation.max_new_tokens  # prompt tokens that leave room to sample
        prompts, prompt_ids = [], []
        for row in self.eval_rows():
            ids = prompt_token_ids(tokenizer, row["prompt"])
            if len(ids) <= budget:
                prompts.append(row["prompt"])
                prompt_ids.append(ids)
        if not prompts:
            raise TaskError(f"every held-out prompt is longer than max_length - max_new_tokens = {budget} tokens")
        device = next(policy.parameters()).device
        reward = spec.build(device=device, batch_size=self.eval_batch_size, files=self._reward_files)
        settings, reference = self.generation, self._reference_model
        metrics = reward_scores(
            policy, tokenizer, prompts, prompt_ids, reward, settings, seed=seed, load_reference=reference
        )
        metrics["n_eval"] = float(len(prompts))
        return TaskScore(score=metrics["reward"], metrics=metrics)

    @cached_property
    def _split(self) -> tuple[list[Row], list[Row]]:
        rows = load_rows(self.dataset, self.split)
        if len(rows) < 2:
            raise TaskError(f"dataset '{self.dataset}' has {len(rows)} row(s); need at least 2 (training and held-out)")
        order = list(range(len(rows)))
        random.Random(self.task_seed).shuffle(order)
        n_eval = min(max(1, round(len(rows) * self.eval_fraction)), len(rows) - 1)
        return [rows[i] for i in order[n_eval:]], [rows[i] for i in order[:n_eval]]

    def _reference_logps(
        self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: Sequence[EncodedPair]
    ) -> torch.Tensor:
        return on_reference(
            policy,
            lambda model: completion_logps(model, tokenizer, encoded, batch_size=self.eval_batch_size),
            self._reference_model,
        )

    def _reference_model(self) -> PreTrainedModel:  # for a policy that is not a PEFT model (else: adapter disabled)
        return self.reference()[0]


def causal_lm_config(location: str, gguf_file: str | None = None) -> PretrainedConfig:
    """The config of the causal LM at ``location`` (a GGUF model is converted first), or one clear TaskError."""
    from transformers import AutoConfig

    resolved = resolve_model(location, gguf_file)
    path = Path(resolved).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise TaskError(f"model directory '{location}' has no config.json; write it with save_pretrained")
    try:
        return AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError):
        raise TaskError(
            f"model '{location}' not found: not a local directory and not reachable on the Hugging Face hub (offline?)"
        ) from None


def load_causal_lm(location: str, gguf_file: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh float32 copy of the causal LM at ``location`` (hub id, directory or GGUF) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(location, gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise TaskError(f"could not load model '{location}': {exc}") from None
    if tokenizer.pad_token is None:  # TRL pads with it; many causal LMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]]) -> list[int]:
    """A prompt's token ids as TRL's DPOTrainer builds them (chat template with generation prompt for messages)."""
    if isinstance(prompt, list):
        return _chat_ids(tokenizer, prompt, generation_prompt=True)
    return list(tokenizer(prompt)["input_ids"])


EncodedPair = tuple[list[int], list[int], list[int]]  # prompt ids, chosen ids, rejected ids


def encode_pair(tokenizer: PreTrainedTokenizerBase, row: Row, max_length: int) -> EncodedPair | None:
    """Token ids as TRL's DPOTrainer builds them, cut to ``max_length``; None when the prompt fills it."""
    prompt = row["prompt"]
    if isinstance(prompt, list):
        prompt_ids = _chat_ids(tokenizer, prompt, generation_prompt=True)
        full = [_chat_ids(tokenizer, prompt + row[key], generation_prompt=False) for key in ("chosen", "rejected")]
    else:
        eos = tokenizer.eos_token or ""
        prompt_ids = tokenizer(prompt)["input_ids"]
        full = [
            tokenizer(prompt + (row[key] if row[key].endswith(eos) else row[key] + eos))["input_ids"]
            for key in ("chosen", "rejected")
        ]
    # Templates may render the prompt differently alone; the completion starts where the lists diverge.
    shared = min(_common_prefix(prompt_ids, ids) for ids in full)
    if shared >= max_length:
        return None
    budget = max_length - shared
    return prompt_ids[:shared], full[0][shared:][:budget], full[1][shared:][:budget]


def completion_logps(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: Sequence[EncodedPair], *, batch_size: int
) -> torch.Tensor:
    """Summed log-probs of each pair's chosen and rejected completion, shape (N, 2), float64 on CPU."""
    sequences = [(p + c, len(p)) for p, c, _ in encoded] + [(p + r, len(p)) for p, _, r in encoded]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    sums: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
            completion = torch.zeros((len(chunk), width), dtype=torch.bool)  # (B, T)
            for i, (ids, prompt_len) in enumerate(chunk):
                input_ids[i, : len(ids)] = torch.tensor(ids)
                attention[i, : len(ids)] = 1
                completion[i, prompt_len : len(ids)] = True
            input_ids, attention = input_ids.to(device), attention.to(device)
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()  # (B, T-1, V)
            targets = input_ids[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
            # gather - logsumexp avoids materializing a second (B, T-1, V) tensor of log-probs.
            token_logps = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (B, T-1)
            mask = completion[:, 1:].to(device)  # (B, T-1): token t+1 is predicted at position t
            sums.append((token_logps * mask).sum(-1).double().cpu())
    flat = torch.cat(sums)  # (2N,)
    n = len(encoded)
    return torch.stack([flat[:n], flat[n:]], dim=1)  # (N, 2)


def _chat_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], *, generation_prompt: bool
) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise TaskError(
            "the dataset is conversational but the model's tokenizer has no chat template; use a chat model or "
            "standard (string) prompt/chosen/rejected data"
        )
    encoded: Any = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
    )
    return list(encoded["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def number_option(options: dict[str, Any], name: str, default: Any, kind: type) -> Any:
    value = options.get(name, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise TaskError(f"option {name} must be a {kind.__name__}, got {value!r}") from None
