"""The table a discovery's claim needs (issue 19, item 5): every confirmed candidate and library baseline of a run,
per task and per task group (search / held-out, normalized), with 95% intervals and the paired differences to
the baseline and to the best library loss, all on the held-out seeds of the run's confirmation.

    python benchmarks/suite_table.py RUN_DIR

Reads the run's archive only (the ``confirmation`` meta that ``search.confirm`` or ``lossforge confirm`` wrote);
prints Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lossforge.discovery.stats.statistics import signed
from lossforge.discovery.storage.archive import Archive


def _estimate(mean: float | None, ci: list[float] | None, *, sign: bool = False) -> str:
    if mean is None:
        return "-"
    text = signed(mean) if sign else f"{mean:.3f}"
    if not ci:
        return text
    low, high = (signed(ci[0]), signed(ci[1])) if sign else (f"{ci[0]:.3f}", f"{ci[1]:.3f}")
    return f"{text} [{low}, {high}]"


def _paired(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return "-"
    return f"{_estimate(comparison['mean'], comparison['ci'], sign=True)} {comparison['verdict']}"


def table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: one per target and task, then per target and task group."""
    note = (
        f"Held-out seeds {report['seeds']}; baseline {report['baseline']}. Per task: the task's own score; per "
        "group: the normalized aggregate (0 = untrained reference, 1 = the baseline)."
    )
    lines = [
        note,
        "",
        "| candidate | role | task | mean [95% CI] | vs baseline | vs best library |",
        "|---|---|---|---|---|---|",
    ]
    rows = [e for e in report["results"] if e["role"] != "reference"]
    for entry in rows:
        lines.append(
            f"| #{entry['candidate_id']} {entry['name']} | {entry['role']} | {entry['task']} | "
            f"{_estimate(entry['mean'], entry['ci'])} | {_paired(entry['paired'])} | "
            f"{_paired(entry.get('vs_best_library'))} |"
        )
    for entry in report.get("groups") or []:
        lines.append(
            f"| #{entry['candidate_id']} {entry['name']} | {entry['role']} | **{entry['group']}: "
            f"{', '.join(entry['tasks'])}** | {_estimate(entry['mean'], entry['ci'])} | {_paired(entry['paired'])} | "
            f"{_paired(entry.get('vs_best_library'))} |"
        )
    return [*lines, "", f"Verdict: {report['sentence']}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if not (args.run_dir / "archive.sqlite").is_file():
        print(f"{args.run_dir}: no run there (no archive.sqlite)", file=sys.stderr)
        return 2
    with Archive.open(args.run_dir) as archive:
        report = archive.get_meta("confirmation")
    if not report or not report.get("results"):
        print(f"{args.run_dir}: no confirmation recorded; run `lossforge confirm {args.run_dir}`", file=sys.stderr)
        return 2
    print("\n".join(table(report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
