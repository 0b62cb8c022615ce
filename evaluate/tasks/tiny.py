"""Building blocks of the embedded tasks: local tokenizers, a tiny Llama, SFT, sampling and log-probs.

Everything here runs offline: the tokenizer is built with ``tokenizers`` from a word list, the model from a
``transformers`` config. Training is plain float32 PyTorch on CPU (no gradient checkpointing, no autocast:
both make tiny models slower, see docs/DESIGN.md "Training and fitness").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from lossforge.evaluate.tasks.base import Task, TaskScore
from lossforge.evaluate.tasks.generation import pad_rows
from lossforge.evaluate.tasks.references import ShippedReference, shipped_reference
from lossforge.evaluate.threads import torch_threads
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

if TYPE_CHECKING:
    import datasets

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def build_tokenizer(symbols: Sequence[str], *, characters: bool = False) -> PreTrainedTokenizerFast:
    """A word-level (or, with ``characters=True``, character-level) tokenizer over ``symbols``.

    Ids 0-3 are ``<pad> <s> </s> <unk>``; every encoding starts with ``<s>``, as Llama tokenizers do, so TRL's
    separate tokenization of prompt and prompt+completion agrees on the prompt prefix.
    """
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *symbols])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    if characters:
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()  # "4", "7" -> "47"
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # decoding joins words with spaces
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="right"
    )


@dataclass(frozen=True)
class TinyModelSpec:
    """Size of the tiny Llama. Part of every task's cache key."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 192
    max_positions: int = 64

    def config(self, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=self.max_positions,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def build_model(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast, *, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)  # weight initialisation is part of what the task seed fixes
    return LlamaForCausalLM(spec.config(tokenizer)).float()


def sft(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    prompt_loss: bool = True,
) -> None:
    """Supervised fine-tuning on prompt+completion token ids, AdamW with a cosine schedule, in place.

    ``prompt_loss=False`` trains on completion tokens only (the model then knows how to answer without
    learning the prompt distribution).
    """
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    order: list[int] = []
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(prompts)), len(prompts))
        batch, order = order[:batch_size], order[batch_size:]
        input_ids = pad_rows([list(prompts[i]) + list(completions[i]) for i in batch], 0)  # (B, T)
        labels = pad_rows(
            [[-100 if not prompt_loss else t for t in prompts[i]] + list(completions[i]) for i in batch], -100
        )
        labels[:, 0] = -100  # <s> is given, never predicted
        logits = model(input_ids=input_ids, attention_mask=(input_ids != 0).long()).logits  # (B, T, V); <pad> is id 0
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def stable_hash(payload: object) -> str:
    """A short hash of a JSON-able payload (sorted keys, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class TinyTask(Task):
    """An embedded task: a tiny Llama SFT-trained on synthetic text, and preference data built from it.

    Subclasses build the tokenizer, and the SFT reference plus the data (with the fixed ``task_seed``);
    this class caches both under ``cache_dir/tasks/<name>-<cache_key>`` and reloads them. Building holds a
    file lock, so parallel workers that need the same reference build it once. The built-in tasks' default
    configurations ship their reference and data (``lossforge.evaluate.tasks.references``): first use copies
    those files into the cache instead of training. ``config`` is ``OPTIONS`` with the given options over it;
    ``score`` scores in eval mode on one thread, through the subclass's ``_score``.
    """

    model_spec: ClassVar[TinyModelSpec] = TinyModelSpec()

    def __init__(self, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.config = {**self.OPTIONS, **self.options}
        self.shipped()  # a damaged shipped reference fails here, in the process that names the task

    @abstractmethod
    def tokenizer(self) -> PreTrainedTokenizerFast:
        """The task's tokenizer, built locally (deterministic: it is part of the cache key)."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every resolved option that changes the data or the reference (SFT budget, data sizes, versions)."""

    @abstractmethod
    def build(self, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel | None, dict[str, Any]]:
        """Train the SFT reference and build the task data (JSON-able, with a ``"train"`` list of pairs); a task
        whose reference is another task's returns None for it and overrides ``reference``."""

    @abstractmethod
    def _score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int) -> TaskScore:
        """Score ``policy`` (already in eval mode, on one thread); ``seed`` seeds whatever the scoring samples."""

    def score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, seed: int) -> TaskScore:
        was_training = policy.training
        policy.eval()  # no LoRA dropout while sampling and scoring: the same seed gives the same result
        try:
            with torch_threads(1):
                return self._score(policy, tokenizer, seed)
        finally:
            policy.train(was_training)

    def build_key(self) -> str:
        """A short hash of everything that determines what ``build`` makes: task, seed, model, tokenizer, settings."""
        tokenizer = self.tokenizer()
        return stable_hash(
            {
                "task": self.name,
                "task_seed": self.task_seed,
                "model": self.model_spec.as_dict(),
                "tokenizer": sorted(tokenizer.get_vocab().items()),
                "settings": self.settings(),
            }
        )

    def shipped(self) -> ShippedReference | None:
        """The shipped reference of this configuration (``references``), checked against its hashes, or None.

        Only the built-in tasks' default configurations ship; a ``TaskError`` says which shipped file is damaged.
        """
        location = f"{type(self).__module__}:{type(self).__qualname__}"
        return shipped_reference(location, self.name, self.build_key())

    def cache_key(self) -> str:
        """The build key, and for a shipped configuration the shipped files' hashes too: a rebuilt shipped
        reference never reuses a cache entry (or reference log-probs, or seed results) of the old one."""
        build_key = self.build_key()
        shipped = self.shipped()
        return build_key if shipped is None else stable_hash({"build": build_key, "shipped": shipped.digest})

    @property
    def artifact_dir(self) -> Path:
        return self.cache_dir / "tasks" / f"{self.name}-{self.cache_key()}"

    def ensure_built(self) -> Path:
        """Copy the shipped reference and data, or build them, unless cached; return their directory."""
        target = self.artifact_dir
        if (target / "data.json").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if (target / "data.json").exists():  # another process built it while we waited
                return target
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                shipped = self.shipped()
                if shipped is not None:
                    shipped.install(staging)
                else:
                    self.build_into(staging)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # gone already unless something failed
        return target

    def build_into(self, directory: Path, *, record_seconds: bool = True) -> None:
        """Build the reference and the data into ``directory`` (the cache layout; ``data.json`` written last).

        ``record_seconds``: note the build time in ``data.json`` (shipped references leave it out, so a rebuild
        on the same machine writes the same bytes).
        """
        started = time.perf_counter()
        with torch_threads(1):
            model, data = self.build(self.tokenizer())
        if record_seconds:
            data["build_seconds"] = round(time.perf_counter() - started, 2)
        if model is not None:  # None: the task's reference is another task's (``derived_sentiment``)
            model.save_pretrained(directory / "reference")
            self.tokenizer().save_pretrained(directory / "reference")
        (directory / "data.json").write_text(json.dumps(data))  # written last: its presence marks a full build

    def data(self) -> dict[str, Any]:
        if getattr(self, "_data", None) is None:
            self._data = json.loads((self.ensure_built() / "data.json").read_text())
        return self._data

    def reference(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        path = self.ensure_built() / "reference"
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.eval()
        return model, PreTrainedTokenizerFast.from_pretrained(path)

    def preference_data(self) -> datasets.Dataset:
        import datasets

        columns = ("prompt", "chosen", "rejected")
        return datasets.Dataset.from_list([{c: pair[c] for c in columns} for pair in self.data()["train"]])

    def reference_logps_for(
        self, policy: PreTrainedModel, fn: Callable[[PreTrainedModel], torch.Tensor]
    ) -> torch.Tensor:
        """``fn`` evaluated on the reference: the policy with its adapter disabled, or the cached SFT model."""
        if hasattr(policy, "disable_adapter"):  # a PEFT model: the base weights are the reference
            with policy.disable_adapter():
                return fn(policy)
        return fn(self.reference()[0])
