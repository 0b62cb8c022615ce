"""Reviewing a run, one module per view; everything here reads the archive only (``promote`` writes one library
file) and none of it imports torch, so review commands answer in well under a second.

- ``snapshot``: ``open_run`` (a read-only, consistent snapshot of a run's archive), ``ReviewError``;
- ``runs``: the runs under a directory and the state of each (running / finished / interrupted);
- ``leaderboard``: trained candidates best first, with tags, multi-seed statistics and headline metrics;
- ``show``: one candidate in full, with lineage and the LLM exchange that produced it;
- ``promote``: copy a candidate into a loss library, checked again;
- ``plot``: PNG figures (loss curves beside DPO, score over generations, reward vs KL, confirmations, LLM cost),
  laid out by ``figure_layout`` (legends under the axes, point labels that do not overlap);
- ``report``: one self-contained HTML file (rewritten by the loop after every generation);
- ``compare``: runs (or retrained models) side by side;
- ``task_info``: a task's headline metrics and score name without importing it; ``summary``: tags, score texts.
"""

from lossforge.discovery.review.leaderboard import leaderboard, read_leaderboard
from lossforge.discovery.review.promote import promote
from lossforge.discovery.review.show import show
from lossforge.discovery.review.snapshot import ARCHIVE_FILE, ReviewError, open_run

__all__ = ["ARCHIVE_FILE", "ReviewError", "leaderboard", "open_run", "promote", "read_leaderboard", "show"]
