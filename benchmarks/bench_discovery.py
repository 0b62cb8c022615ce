"""The evidence: a discovery with the offline ``evolve`` proposer on each task, its winners confirmed on held-out
seeds and on the other task, printed as the table DiscoPOP's Table 1 should have had (mean, 95% interval and
paired difference to DPO with its interval and verdict, for each confirmed candidate and the library losses).

For each search task: ``run_discovery`` (generation 0 = the library seeds, then G generations of P proposals),
then ``search.confirm`` retrains the top-k discovered candidates, DPO and the best library loss of generation 0
on N held-out seeds (never used by the search, nor for choosing anything here) on the search task and on the
other one; then the other library losses of generation 0 are retrained on the same seeds and tasks (role
``library``; DPO's trainings are reused), so the table lists every library baseline beside the discoveries.
The last section says what the fitness can resolve: the seed-to-seed spread of each loss against the
differences between library losses. ``--resume`` continues (or, when finished, only re-reads) the runs in
``--out``. Usage::

    python benchmarks/bench_discovery.py [--tasks sentiment,arithmetic] [--search-on sentiment] [--generations 3]
        [--population 4] [--seeds 1] [--top 3] [--confirm-seeds 5] [--seed 0] [--workers 1] [--out DIR] [--resume]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from lossforge.discovery.storage.provenance import hardware_line


def _interval(ci: list[float] | None) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"


def _table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| confirmed on | beta | candidate | role | n | mean | 95% CI | vs dpo | 95% CI | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        paired = r.get("paired") or {}
        mean = "-" if r["mean"] is None else f"{r['mean']:+.3f}"
        diff = f"{paired['mean']:+.3f}" if paired else "-"
        lines.append(
            f"| {r['task']} | {r['beta']:g} | #{r['candidate_id']} {r['name']} | {r['role']} | "
            f"{len(r['scores'])} | {mean} | {_interval(r['ci'])} | {diff} | "
            f"{_interval(paired.get('ci'))} | {paired.get('verdict', '-')} |"
        )
    return lines


def _resolution(results: list[dict[str, Any]]) -> list[str]:
    """Seed-to-seed standard deviation of each result against the spread of the means on each task."""
    lines = []
    for task in sorted({r["task"] for r in results}):
        group = [r for r in results if r["task"] == task and len(r["scores"]) >= 2]
        if not group:
            continue
        sds = [math.sqrt(sum((x - r["mean"]) ** 2 for x in r["scores"]) / (len(r["scores"]) - 1)) for r in group]
        means = [r["mean"] for r in group]
        half = [(p["ci"][1] - p["ci"][0]) / 2 for r in group if (p := r.get("paired")) and p.get("ci")]
        lines.append(
            f"- {task}: seed-to-seed sd {min(sds):.3f}-{max(sds):.3f} (median {sorted(sds)[len(sds) // 2]:.3f}); "
            f"means span {max(means) - min(means):.3f}; paired 95% half-widths "
            + (f"{min(half):.3f}-{max(half):.3f}" if half else "-")
        )
    return lines


def _library(config: Any, run_dir: Path, tasks: list[str], shown: set[int], workers: int) -> list[dict[str, Any]]:
    """The trained library losses of generation 0 not in ``shown``, confirmed like the winners (same held-out
    seeds, tasks and beta; the baseline's trainings are reused), without touching the run's own confirmation."""
    from lossforge.discovery.executors import make_executor
    from lossforge.discovery.scoring.confirm import plan_from_config, results, run_trainings
    from lossforge.discovery.storage.archive import Archive
    from lossforge.evaluate.training.launcher import train_candidate

    with Archive.open(run_dir) as archive:
        ids = [row.id for row in archive.candidates(status="ok", generation=0) if row.id not in shown]
        if not ids:
            return []
        plan = plan_from_config(config, archive, ids=ids, tasks=tasks)
        executor = make_executor("local", workers)
        try:
            run_trainings(archive, plan, executor=executor, train=train_candidate)
        finally:
            executor.shutdown()
        return [{**entry, "role": "library"} for entry in results(archive, plan) if entry["candidate_id"] in ids]


def _ordered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task: the discovered candidates, the library losses best first, the baseline last."""
    rank = {"candidate": 0, "best_library": 1, "library": 2, "baseline": 3}
    tasks = list(dict.fromkeys(r["task"] for r in results))
    return sorted(
        results,
        key=lambda r: (
            tasks.index(r["task"]),
            rank[r["role"]],
            -(r["mean"] if r["mean"] is not None and r["role"] == "library" else 0),
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sentiment,arithmetic")
    parser.add_argument("--search-on", default=None, help="tasks to search on (default: each of --tasks)")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1, help="search seeds per candidate (training.seeds)")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--confirm-seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--resume", action="store_true", help="continue the runs already in --out")
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on

    from lossforge.discovery.config import build_config
    from lossforge.discovery.loop import run_discovery

    tasks = [t for t in args.tasks.split(",") if t]
    out = args.out or Path(tempfile.mkdtemp(prefix="lossforge-bench-discovery-"))
    report: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": [],
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
    }
    for task in [t for t in (args.search_on or args.tasks).split(",") if t]:
        others = [t for t in tasks if t != task]
        config = build_config(
            {
                "search": {
                    "generations": args.generations,
                    "population": args.population,
                    "confirm": {"top_k": args.top, "seeds": args.confirm_seeds, "tasks": others},
                },
                "training": {"task": task, "seeds": args.seeds},
                "execution": {"workers": args.workers},
                "seed": args.seed,
                "out": str(out / task),
            }
        )
        started = time.monotonic()
        summary = run_discovery(config, out / task, resume=args.resume and (out / task).is_dir(), progress=True)
        confirmation = summary.confirmation or {}
        shown = confirmation.get("results", [])
        library = _library(config, out / task, [task, *others], {r["candidate_id"] for r in shown}, args.workers)
        run = {
            "task": task,
            "run_dir": str(out / task),
            "wall_s": round(time.monotonic() - started, 1),
            "train_busy_s": round(summary.train_busy_s, 1),
            "counts": summary.counts,
            "sentence": confirmation.get("sentence"),
            "results": _ordered([*shown, *library]),
        }
        report["runs"].append(run)
        print(f"\n## search on {task}: {summary.counts}, {run['wall_s']} s\n")
        print("\n".join(_table(run["results"])))
        print("\n" + "\n".join(_resolution(run["results"])))
        print(f"\n{run['sentence']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
