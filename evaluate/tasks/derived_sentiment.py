"""The tasks that are ``sentiment`` with other training pairs (``off_policy``, ``noisy_labels``,
``overoptimization``): one base class, so they share sentiment's reference, held-out data and scoring in one way.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from lossforge.evaluate.tasks.sentiment import DEFAULTS, SCORING_OPTIONS, SentimentTask
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# sentiment's options that determine its reference and its held-out data: a derived task hands them on to the
# SentimentTask it takes those from, so with the defaults that is sentiment's shipped configuration.
_SHARED_OPTIONS = tuple(k for k in DEFAULTS if k != "train_pairs" and k not in SCORING_OPTIONS)


class DerivedSentimentTask(SentimentTask):
    """``sentiment`` with other training pairs: its reference, held-out prompts, held-out pairs and scoring.

    Subclasses implement ``_train_pairs``. The reference is loaded from the ``SentimentTask`` of the same task
    seed and shared options (``sentiment()``), whose cache key is part of this task's settings, so a rebuilt
    ``sentiment`` reference rebuilds this task's data too.
    """

    def sentiment(self) -> SentimentTask:
        """The ``sentiment`` task whose reference and held-out data this task reuses."""
        options = {k: self.config[k] for k in _SHARED_OPTIONS if self.config[k] != DEFAULTS[k]}
        if self._sentiment_train_pairs() != DEFAULTS["train_pairs"]:
            options["train_pairs"] = self._sentiment_train_pairs()
        return SentimentTask(options, cache_dir=self.cache_dir, task_seed=self.task_seed)

    def _sentiment_train_pairs(self) -> int:
        """How many training pairs the ``sentiment`` task should hold (its default unless a subclass uses them)."""
        return DEFAULTS["train_pairs"]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "sentiment": self.sentiment().cache_key()}

    def reference(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """``sentiment``'s reference: built or shipped once, under its cache entry, never copied into this task's."""
        return self.sentiment().reference()

    def build(self, tokenizer: PreTrainedTokenizerFast) -> tuple[None, dict[str, Any]]:
        source = self.sentiment()
        model, _ = source.reference()
        source_data = source.data()
        train, extra = self._train_pairs(model, tokenizer, source_data)
        return None, {
            "train": train,
            "heldout_pairs": source_data["heldout_pairs"],
            "heldout_prompts": source_data["heldout_prompts"],
            **extra,
        }

    @abstractmethod
    def _train_pairs(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source_data: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The training pairs (from the reference ``model`` and ``sentiment``'s data), and further data
        properties to record in ``data.json``."""


__all__ = ["DerivedSentimentTask"]
