"""The task interface: build preference data, provide the reference model, score a trained policy.

A task is what a candidate is trained and scored on. The engine (``lossforge.evaluate.training.launcher``) owns the
training loop; a task only supplies data, the reference model and the scoring rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lossforge.evaluate.cache import cache_root

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class TaskScore:
    """``score``: higher is better. ``metrics``: the task's named metrics (floats)."""

    score: float
    metrics: dict[str, float] = field(default_factory=dict)


class TaskError(ValueError):
    """Bad task input (unknown task, missing dataset column, missing model path...): one clear message."""


class Task(ABC):
    """Base class of every task. Subclasses set the class attributes and implement the four methods.

    ``options`` carries task-specific settings (for ``hf``: ``model``, ``dataset``...). ``cache_dir`` is
    ``$LOSSFORGE_CACHE`` (default ``~/.cache/lossforge``); everything cached must be keyed by ``cache_key()``.
    Data and the reference are built with the fixed ``task_seed``; training/sampling seeds come from the engine.
    """

    name: ClassVar[str]
    # What the proposer's prompt says about the task: what it is, what the score measures (and its short name),
    # and which metrics matter most (review commands show these first).
    description: ClassVar[str] = ""
    objective_name: ClassVar[str] = "score"
    objective: ClassVar[str] = "the task's score of the trained policy"
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    default_steps: ClassVar[int]
    default_beta: ClassVar[float] = 0.1
    default_learning_rate: ClassVar[float] = 5e-4
    default_batch_size: ClassVar[int] = 16
    max_length: ClassVar[int] = 128
    # The options the task accepts (name -> default value or description); any other option is refused at
    # construction, naming the valid ones. A task that leaves it empty accepts whatever it is given.
    OPTIONS: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        options: dict[str, Any] | None = None,
        *,
        cache_dir: Path | None = None,
        eval_samples: int | None = None,
        task_seed: int = 1234,
    ) -> None:
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(self.OPTIONS)) if self.OPTIONS else []
        if unknown:
            raise TaskError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for task '{self.name}'; "
                f"valid: {', '.join(self.OPTIONS)}"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self.eval_samples = eval_samples
        self.task_seed = task_seed

    @abstractmethod
    def cache_key(self) -> str:
        """A short hash of everything that determines the data and the reference (task, seed, model, data)."""

    @abstractmethod
    def reference(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The reference model (a fresh copy each call, in float32 on CPU) and its tokenizer; built once and cached."""

    @abstractmethod
    def preference_data(self) -> datasets.Dataset:
        """Training pairs with columns ``prompt``, ``chosen``, ``rejected`` (standard or conversational)."""

    @abstractmethod
    def score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, seed: int) -> TaskScore:
        """Score a trained policy. For a PEFT model, ``policy.disable_adapter()`` gives the reference."""
