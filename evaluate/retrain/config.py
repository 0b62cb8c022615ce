"""What a retrain is asked to do: the loss (``LossSpec``) and the whole configuration (``RetrainConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossforge.evaluate.retrain.recipe import Recipe


@dataclass(frozen=True)
class LossSpec:
    """A loss to retrain: its display name, source text and metadata (``NAME``/``DESCRIPTION``/...)."""

    name: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_candidate(cls, candidate: Any) -> LossSpec:
        """From a library entry (``lossforge.candidates.load_library()[name]``)."""
        metadata = {
            "NAME": candidate.name,
            "DESCRIPTION": candidate.description,
            "ORIGIN": candidate.origin,
            "PARENTS": list(candidate.parents),
        }
        return cls(candidate.name, candidate.source, metadata)


@dataclass(frozen=True)
class RetrainConfig:
    """What to retrain, on what, and how to evaluate it.

    Attributes:
        loss: the candidate; ``baseline``: a second loss trained identically into ``out/baseline``, or None.
        model, dataset: hub ids or local paths (``save_pretrained`` directory or ``.gguf`` file; JSONL/JSON/Parquet
            or ``save_to_disk`` directory, standard or conversational ``prompt/chosen/rejected``). ``model`` is
            recorded as given; what loads is ``Prepared.model_path`` (``model_source.resolve_model``).
        recipe: the resolved recipe (``recipe.load_recipe``).
        num_processes: ranks of the launch (<= visible GPUs; on CPU <= cores).
        accelerate_config: an accelerate config file; None: the recipe's (on GPUs) or plain DDP.
        report_to: ``none``, ``tensorboard``, ``wandb`` or ``trackio``.
        train_split, test_split, test_fraction: the training split; the held-out split, or the share carved
            out of the training split when the dataset has no ``test_split``.
        eval_samples: cap on held-out pairs scored; None: all.
        judge: ``judge`` task options (``questions``, ``judge_model``, ...), or None.
        lm_eval, lm_eval_include, lm_eval_limit: ``--lm-eval`` tasks, extra task YAMLs, examples per task.
        static_policy: re-check the loss with the static policy (off only for tests of the deeper layers).
        timeout_s: wall-clock limit of each launch; None: the recipe's ``default_timeout_s()``.
    """

    loss: LossSpec
    model: str
    dataset: str
    out: Path
    recipe: Recipe
    num_processes: int = 1
    accelerate_config: Path | None = None
    report_to: str = "none"
    train_split: str = "train"
    test_split: str = "test"
    test_fraction: float = 0.1
    eval_samples: int | None = None
    judge: dict[str, Any] | None = None
    lm_eval: str | None = None
    lm_eval_include: Path | None = None
    lm_eval_limit: int | None = None
    baseline: LossSpec | None = None
    static_policy: bool = True
    timeout_s: float | None = None

    @property
    def launch_timeout_s(self) -> float:
        return self.timeout_s if self.timeout_s is not None else self.recipe.default_timeout_s()


__all__ = ["LossSpec", "RetrainConfig"]
