"""How a retrain fails after its configuration was accepted: the checker rejects the loss, or the launch fails
or runs past its timeout. (Bad input is ``ConfigError`` or ``TaskError``, raised before anything is launched.)"""

from __future__ import annotations


class CandidateRejected(RuntimeError):
    """The checker rejected the loss; nothing was launched."""


class TrainingFailed(RuntimeError):
    """The ``accelerate launch`` exited with an error (its output went to ``OUT/train.log``)."""


class TrainingTimeout(TrainingFailed):
    """The launch ran past its timeout; every process of it was killed."""


__all__ = ["CandidateRejected", "TrainingFailed", "TrainingTimeout"]
