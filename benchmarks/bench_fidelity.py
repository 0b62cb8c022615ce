"""Successive halving, measured: (a) how well a low-fidelity score ranks the library like the full-fidelity one
(Spearman rank correlation over every library loss, on a seed that played no part in any tuning), and (b) the
training seconds of a generation and the final confirmed winner with and without ``search.fidelity`` at equal
population (the same config and proposals otherwise).

    python benchmarks/bench_fidelity.py [--task sentiment] [--seed 7] [--fraction 0.25] [--part a|b|ab]
        [--population 4] [--seeds 2] [--confirm-seeds 2] [--workers 1] [--json FILE]

(a) trains each of the 19 library losses once at ``fraction`` of the task's default steps and once at the full
default, both on ``--seed``; (b) runs one generation of ``--population`` evolve proposals on ``--seeds`` search
seeds twice, without and with ``{steps_fractions: [fraction, 1.0], keep: 0.5}``, each confirmed (top 1, DPO
and the best library loss on ``--confirm-seeds`` held-out seeds). Seconds are the workers' own wall time summed over
trainings (one torch thread each), i.e. the compute a generation costs, apart from the loop around it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from lossforge.discovery.stats.statistics import spearman
from lossforge.discovery.storage.provenance import hardware_line


def part_a(task: str, seed: int, fraction: float) -> dict[str, Any]:
    from lossforge.candidates import load_library
    from lossforge.evaluate.tasks import task_class
    from lossforge.evaluate.training.launcher import TrainConfig, train_candidate

    full = task_class(task).default_steps
    low = max(1, round(full * fraction))
    rows = []
    for name, candidate in load_library().items():
        scores = {}
        for steps in (low, full):
            result = train_candidate(candidate, TrainConfig(task=task, steps=steps, seed=seed, threads=1))
            scores[steps] = result.score if result.status == "ok" else None
            scores[f"{steps}_s"] = result.timings.get("total")
        rows.append(
            {
                "loss": name,
                "low": scores[low],
                "full": scores[full],
                "low_s": scores[f"{low}_s"],
                "full_s": scores[f"{full}_s"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    both = [r for r in rows if r["low"] is not None and r["full"] is not None]
    rho = spearman([r["low"] for r in both], [r["full"] for r in both])
    return {
        "task": task,
        "seed": seed,
        "low_steps": low,
        "full_steps": full,
        "n": len(both),
        "spearman": rho,
        "rows": rows,
    }


def part_b(
    task: str,
    seed: int,
    fraction: float,
    population: int,
    seeds: int,
    out: Path,
    *,
    confirm_seeds: int = 2,
    workers: int = 1,
) -> dict[str, Any]:
    from lossforge.discovery.config import build_config
    from lossforge.discovery.loop import run_discovery
    from lossforge.discovery.storage.archive import Archive

    runs = {}
    for label, fidelity in (("off", None), ("halving", {"steps_fractions": [fraction, 1.0], "keep": 0.5})):
        config = build_config(
            {
                "search": {
                    "generations": 1,
                    "population": population,
                    "fidelity": fidelity,
                    "confirm": {"top_k": 1, "seeds": confirm_seeds},
                },
                "training": {"task": task, "seeds": seeds},
                "seed": seed,
                "out": str(out / label),
                "execution": {"workers": workers},
            }
        )
        started = time.monotonic()
        summary = run_discovery(config, out / label, progress=False)
        with Archive.open(out / label) as archive:
            generation = archive.candidates(generation=1)
            seconds = sum(float(r.timings.get("total", 0.0)) for r in generation)
            trained = {
                r.name: {
                    "score": r.score,
                    "rungs": [(e["steps"], e["mean"]) for e in (r.stats or {}).get("rungs", [])],
                    "s": round(float(r.timings.get("total", 0.0)), 1),
                }
                for r in generation
                if r.status == "ok"
            }
        runs[label] = {
            "wall_s": round(time.monotonic() - started, 1),
            "generation_1_training_s": round(seconds, 1),
            "counts": summary.counts,
            "sentence": (summary.confirmation or {}).get("sentence"),
            "best": (summary.best or {}).get("name"),
            "generation_1": trained,
            "confirmation": [
                (
                    e["name"],
                    e["role"],
                    e["mean"],
                    (e.get("paired") or {}).get("mean"),
                    (e.get("paired") or {}).get("ci"),
                    (e.get("paired") or {}).get("verdict"),
                )
                for e in (summary.confirmation or {}).get("results", [])
            ],
        }
        print(label, json.dumps(runs[label]), flush=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--part", default="ab")
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--confirm-seeds", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, default=1, help="concurrent trainings (one torch thread each at 2 on 2 cores)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count()}
    if "a" in args.part:
        report["a"] = part_a(args.task, args.seed, args.fraction)
        print(f"(a) Spearman low vs full over {report['a']['n']} library losses: {report['a']['spearman']:.3f}")
    if "b" in args.part:
        report["b"] = part_b(
            args.task,
            args.seed,
            args.fraction,
            args.population,
            args.seeds,
            Path(tempfile.mkdtemp(prefix="lossforge-bench-fidelity-")),
            confirm_seeds=args.confirm_seeds,
            workers=args.workers,
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
