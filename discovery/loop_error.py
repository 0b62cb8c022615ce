"""``LoopError``: a run that cannot start or go on as asked (bad directory, live lock, changed config on
resume, bad endpoint, key or model). ``lossforge run`` reports it as one line and exits 2."""

from __future__ import annotations


class LoopError(ValueError):
    """A run that cannot start as asked; the message says what to change."""


__all__ = ["LoopError"]
