"""Rewards of generated text: what the ``hf`` task's ``score: reward`` and the ``reviews`` task score samples by.

A :class:`Reward` maps (prompt, completion) pairs to floats, higher is better:

- :class:`VaderReward` (``reward: vader``): VADER's compound sentiment of the completion, in [-1, 1]
  (Hutto and Gilbert, ICWSM 2014; the ``vaderSentiment`` package): a rule-based stand-in for the sentiment
  classifier of the DPO paper's IMDb experiment (arXiv 2305.18290, section 6.1), with no model to download;
- :class:`ClassifierReward` (``reward_model``): a sequence-classification model (a reward model trained with
  TRL's RewardTrainer has one label; a sentiment classifier has several, one of which is "good"); the reward is
  the logit of the good label for prompt + completion.

``REWARDS`` is the single source of built-in reward names; :func:`reward_by_name` builds one; a
:class:`RewardSpec` is a task's choice between the two kinds, checked when it is made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lossforge.evaluate.model_source import model_identity
from lossforge.evaluate.tasks.base import TaskError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# A prompt as the tasks hold it: a string, or a conversation of {"role", "content"} messages.
Prompt = str | list[dict[str, str]]
# Files a reward model needs; other weight formats (TensorFlow, Flax, ONNX, GGUF) are skipped when fetching.
_SKIPPED_FILES = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.gguf", "onnx/*", "tf_*", "flax_*", "rust_*"]


class Reward(Protocol):
    """Scores completions of prompts; one float per pair, higher is better."""

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]: ...


class VaderReward:
    """VADER's compound sentiment score of the completion alone, in [-1, 1]; the prompt is not scored (the
    tasks' prompts are the openings a policy continues, and only the continuation is the policy's)."""

    def __init__(self) -> None:
        self.version()  # the clear error first, when the package is missing
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    @staticmethod
    def version() -> str:
        """The installed vaderSentiment version (its lexicon decides the scores, so caches key on it)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("vaderSentiment")
        except PackageNotFoundError:
            raise TaskError(
                'the vader reward needs the vaderSentiment package; pip install "lossforge[vader]"'
            ) from None

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        return [float(self._analyzer.polarity_scores(text)["compound"]) for text in completions]


REWARDS: dict[str, Callable[[], Reward]] = {"vader": VaderReward}


def reward_by_name(name: str) -> Reward:
    """The built-in reward called ``name`` (see ``REWARDS``)."""
    if name not in REWARDS:
        raise TaskError(f"unknown reward {name!r}; built-in rewards: {', '.join(REWARDS)}")
    return REWARDS[name]()


def classifier_config(location: str) -> PretrainedConfig:
    """The config of the reward model at ``location``, checked to be a sequence classifier."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError):
        raise TaskError(
            f"reward_model '{location}' not found: not a local directory and not reachable on the Hugging Face hub "
            "(offline?)"
        ) from None
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        kind = ", ".join(architectures) or "a model without architectures in its config"
        raise TaskError(
            f"reward_model '{location}' is {kind}, not a sequence classifier (AutoModelForSequenceClassification); "
            "give a reward or classification model, or a built-in reward with the option reward"
        )
    return config


def good_label(config: PretrainedConfig, location: str, label: str | int | None) -> int:
    """The index of the logit that rewards: the only one, or the one ``label`` names (by name or index)."""
    names = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
    if label is None:
        if config.num_labels == 1:
            return 0
        raise TaskError(
            f"reward_model '{location}' has {config.num_labels} labels ({', '.join(names)}); say which one is good "
            "with the option reward_label"
        )
    if str(label) in names:
        return names.index(str(label))
    if str(label).isdigit() and int(label) < config.num_labels:
        return int(label)
    raise TaskError(f"reward_label {label!r} is not a label of reward_model '{location}' (labels: {', '.join(names)})")


def local_files(location: str) -> str:
    """A local directory holding the reward model: ``location`` itself, or the hub repository fetched into the
    Hugging Face cache. Scoring may run where the network is cut (docs/DESIGN.md: the scoring process is locked
    down), so the files are fetched beforehand."""
    path = Path(location).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if location.startswith((".", "/", "~")) or path.exists():  # a path, not a hub id: nothing to fetch
        raise TaskError(f"reward_model '{location}' not found: not a model directory")
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(location, ignore_patterns=_SKIPPED_FILES))
    except Exception as exc:  # noqa: BLE001 - hub and network errors come in many types; one message for all
        raise TaskError(f"reward_model '{location}' could not be fetched from the Hugging Face hub ({exc})") from None


class ClassifierReward:
    """The good label's logit of a sequence-classification model, on prompt + completion.

    A conversational prompt is rendered with the reward model's chat template (the completion as the assistant's
    turn) when its tokenizer has one, else as ``role: content`` lines. Texts longer than the tokenizer's
    ``model_max_length`` are cut from the end.
    """

    def __init__(
        self, location: str, *, label: str | int | None = None, device: Any = "cpu", batch_size: int = 8
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.location = location
        self.index = good_label(classifier_config(location), location, label)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        if self.tokenizer.pad_token is None:  # batching needs one; many reward models ship without
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(location, dtype=torch.float32)
        # The classifier reads the last non-pad token of each row: it must know which id pads.
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = model.to(device).eval()

    def text(self, prompt: Prompt, completion: str) -> str:
        if isinstance(prompt, str):
            return prompt + completion
        messages = [*prompt, {"role": "assistant", "content": completion}]
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False))
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        import torch

        texts = [self.text(p, c) for p, c in zip(prompts, completions, strict=True)]
        device = next(self.model.parameters()).device
        rewards: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size], return_tensors="pt", padding=True, truncation=True
                ).to(device)
                logits = self.model(**batch).logits.float()  # (B, num_labels)
                rewards += logits[:, self.index].tolist()
        return rewards


@dataclass(frozen=True)
class RewardSpec:
    """Which reward scores samples: the built-in reward ``name``, or the classifier at ``model`` with its good
    ``label``. Exactly one of ``name`` and ``model`` (the task options ``reward`` and ``reward_model``)."""

    name: str | None = None
    model: str | None = None
    label: str | int | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.model is None):
            raise TaskError(
                f"score=reward needs exactly one of the options reward (built-in: {', '.join(REWARDS)}) and "
                "reward_model (a sequence-classification model)"
            )
        if self.name is not None and self.name not in REWARDS:
            raise TaskError(f"option reward must be one of {', '.join(REWARDS)}, got {self.name!r}")
        if self.label is not None and self.model is None:
            raise TaskError("option reward_label names a label of reward_model; it needs the option reward_model")

    def identity(self) -> Any:
        """For cache keys: the built-in name, or the model's identity and good label (its config is checked here,
        so a model that is no sequence classifier is refused before any training is spent)."""
        if self.model is None:
            return self.name
        return {
            "model": model_identity(self.model),
            "label": good_label(classifier_config(self.model), self.model, self.label),
        }

    def build(self, *, device: Any, batch_size: int, files: str | None = None) -> Reward:
        """The reward; ``files``: the model's local directory when :func:`local_files` fetched it beforehand."""
        if self.name is not None:
            return reward_by_name(self.name)
        location = files or local_files(str(self.model))
        return ClassifierReward(location, label=self.label, device=device, batch_size=batch_size)


__all__ = [
    "REWARDS",
    "ClassifierReward",
    "Prompt",
    "Reward",
    "RewardSpec",
    "VaderReward",
    "classifier_config",
    "good_label",
    "local_files",
    "reward_by_name",
]
