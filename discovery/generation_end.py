"""What the loop tells the callback a run is given (``run_discovery(on_generation_end=...)``): after generation 0,
after each later generation, and once more when the run ends. The loop knows nothing of what the callback
does; ``lossforge run`` rewrites the run's HTML report with it (``review.report.GenerationReports``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RunEnd = Literal["finished", "aborted"]


@dataclass(frozen=True)
class GenerationEnd:
    """``generation``: the one just completed (0: the library seeds); on the last call, the last one completed.
    ``ended``: None while the run goes on; ``finished`` once it has (after the confirmation), ``aborted`` when it
    stopped on an error or an interrupt. ``note`` is the run's progress sink; ``started`` the ``time.monotonic()``
    at which the generations began."""

    run_dir: Path
    generation: int
    note: Callable[[str], None]
    started: float
    ended: RunEnd | None = None


OnGenerationEnd = Callable[[GenerationEnd], None]

__all__ = ["GenerationEnd", "OnGenerationEnd", "RunEnd"]
