"""The one place that says where lossforge caches things: ``$LOSSFORGE_CACHE``, default ``~/.cache/lossforge``.

Task data, SFT references, reference log-probs and seed results live below it, each keyed by everything that
determines it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LOSSFORGE_CACHE`` if set, else ``~/.cache/lossforge``."""
    return Path(os.environ.get("LOSSFORGE_CACHE", Path.home() / ".cache" / "lossforge"))


__all__ = ["cache_root"]
