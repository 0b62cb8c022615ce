"""Ablation of the smarter search (issue 11): ``evolve`` with and without niches and near-duplicate rejection.

Two arms at equal budget (the same generations x population proposals, the same run seeds, one shared fresh
cache, so generation 0 is trained once per run seed and reused by both arms):

- ``plain``: today's search (``search.niches: null``, ``search.near_duplicates: null``);
- ``smart``: ``search.niches: [rho_only, convex, bounded, targets_margin]`` and ``search.near_duplicates: 0.01``.

Per run seed and arm it reports the best search score, the best *confirmed* score (the top candidate retrained
on ``--confirm-seeds`` held-out seeds, ``search.confirm``; its held-out mean), the number of distinct niches
with a scored candidate (the same axes for both arms), and the training seconds spent on near-duplicates: in
the plain arm, the trainings of candidates within 0.01 of an earlier trained one (which the smart arm would
not have trained); in the smart arm, the near-duplicates it rejected (zero training) and their check seconds.
One torch thread per training, so training seconds are CPU-seconds. Usage::

    python benchmarks/bench_search.py [--run-seeds 0,1,2] [--generations 2] [--population 3] [--steps 8]
        [--eval-samples 16] [--confirm-seeds 2] [--task sentiment]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lossforge.discovery.storage.provenance import hardware_line

AXES = ["rho_only", "convex", "bounded", "targets_margin"]
THRESHOLD = 0.01


def _near_duplicate_seconds(rows: list[Any]) -> tuple[int, float]:
    """Trained generation >= 1 rows within THRESHOLD of an earlier trained row, and their training seconds."""
    from lossforge.evaluate.checking.near_duplicates import nearest_within

    count, seconds = 0, 0.0
    trained = [row for row in rows if "train_start" in row.timings and row.profile]
    for i, row in enumerate(trained):
        if row.generation == 0:
            continue
        earlier = [(r.id, r.name or "", r.profile) for r in trained[:i]]
        if nearest_within(row.profile, earlier, THRESHOLD) is not None:
            count += 1
            seconds += float(row.timings["train_end"]) - float(row.timings["train_start"])
    return count, seconds


def _one(args: argparse.Namespace, scratch: Path, seed: int, smart: bool) -> dict[str, Any]:
    from lossforge.discovery.config import build_config
    from lossforge.discovery.loop import run_discovery
    from lossforge.discovery.search.niches import niche_grid
    from lossforge.discovery.storage.archive import Archive

    arm = "smart" if smart else "plain"
    out = scratch / f"{arm}-seed{seed}"
    config = build_config(
        {
            "search": {
                "generations": args.generations,
                "population": args.population,
                "confirm": {"top_k": 1, "seeds": args.confirm_seeds},
                "niches": AXES if smart else None,
                "near_duplicates": THRESHOLD if smart else None,
            },
            "training": {"task": args.task, "steps": args.steps, "eval_samples": args.eval_samples},
            "seed": seed,
            "out": str(out),
        }
    )
    summary = run_discovery(config, out, progress=False)
    with Archive.open(out) as archive:
        rows = archive.candidates()
    winner = next((e for e in (summary.confirmation or {}).get("results", []) if e["role"] == "candidate"), None)
    near_trained, near_seconds = _near_duplicate_seconds(rows)
    rejected = [r for r in rows if (r.reason or "").startswith("near-duplicate of")]
    return {
        "arm": arm,
        "seed": seed,
        "best_score": (summary.best or {}).get("score"),
        "best_confirmed": winner["mean"] if winner else None,
        "best_confirmed_name": winner["name"] if winner else None,
        "niches_filled": sum(1 for cell in niche_grid(rows, AXES) if cell.scored),
        "trained": sum(1 for r in rows if "train_start" in r.timings and r.generation > 0),
        "near_duplicates_trained": near_trained,
        "near_duplicate_train_s": round(near_seconds, 2),
        "near_duplicates_rejected": len(rejected),
        "near_duplicate_check_s": round(sum(float(r.timings.get("check_s", 0.0)) for r in rejected), 3),
        "counts": summary.counts,
        "wall_s": round(summary.wall_s, 1),
        "train_busy_s": round(summary.train_busy_s, 1),
    }


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return round(statistics.fmean(numbers), 4) if numbers else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--run-seeds", default="0,1,2")
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--population", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--confirm-seeds", type=int, default=2)
    args = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on

    scratch = Path(tempfile.mkdtemp(prefix="lossforge-bench-search-"))
    os.environ["LOSSFORGE_CACHE"] = str(scratch / "cache")
    os.environ.setdefault("LOSSFORGE_HOME", str(scratch / "home"))
    runs = [_one(args, scratch, int(seed), smart) for seed in args.run_seeds.split(",") for smart in (False, True)]
    summary = {
        arm: {
            key: _mean([r[key] for r in runs if r["arm"] == arm])
            for key in (
                "best_score",
                "best_confirmed",
                "niches_filled",
                "trained",
                "near_duplicates_trained",
                "near_duplicate_train_s",
                "near_duplicates_rejected",
            )
        }
        for arm in ("plain", "smart")
    }
    print(
        json.dumps(
            {
                "settings": vars(args),
                "axes": AXES,
                "threshold": THRESHOLD,
                "runs": runs,
                "mean": summary,
                "cpu_count": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d"),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
