"""The built-in task suites: which tasks a search climbs and which it never sees (issue 19).

A suite splits tasks into **search tasks** (every candidate trains on each; its score is the multi-task fitness
of ``stats.multi_task``) and **held-out tasks** (used only by the end-of-run confirmation, on held-out seeds:
the meta-test). DiscoPOP's claim was that a discovered loss transfers to tasks the discovery never saw; a suite
makes that claim testable on every run, as recent discovery benchmarks split their tasks into meta-train and
meta-test sets.

``default``: the search climbs ``sentiment`` (on-policy pairs), ``noisy_labels`` (30 % of the labels flipped)
and ``off_policy`` (pairs written by other generators); it is tested on ``length_bias`` (longer preferred
responses, a length-neutral gold reward), ``overoptimization`` (a small set trained past the gold reward's
peak) and ``arithmetic`` (low edit-distance pairs on another domain). The held-out tasks model properties
the search tasks do not, so a loss fitted to the search tasks' quirks shows it there. Fixed in the package:
changing a suite changes what every run's numbers mean (docs/TASKS.md, "Suites").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Suite:
    """A named split of built-in tasks into the tasks searched on and the tasks held out for confirmation."""

    name: str
    search: tuple[str, ...]
    heldout: tuple[str, ...]


SUITES: dict[str, Suite] = {
    "default": Suite(
        "default",
        search=("sentiment", "noisy_labels", "off_policy"),
        heldout=("length_bias", "overoptimization", "arithmetic"),
    ),
}
SUITE_NAMES: tuple[str, ...] = tuple(SUITES)


def suite(name: str) -> Suite:
    """The suite called ``name``; ``ValueError`` naming the suites there are."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; built-in suites: {', '.join(SUITE_NAMES)}")
    return SUITES[name]


__all__ = ["SUITES", "SUITE_NAMES", "Suite", "suite"]
