"""Candidates per hour with one training per GPU and with several (issue 20, ``execution.workers_per_gpu``).

The same small discovery (``--task``, the offline ``evolve`` proposer, ``--generations`` of ``--population``
proposals after the ``--seed-candidates``, ``--seed``, ``search.confirm.top_k: 0``) runs once per concurrency
in ``--counts``: ``--workers-per-gpu N`` on CUDA, ``--workers N`` on CPU (the fallback comparison: N threads of
trainings sharing the cores). Each run is ``lossforge run`` in a process of its own with an empty cache of its
own (``$LOSSFORGE_CACHE``), so no run reuses another's seed results or reference log-probs and each pays the
same one-off work. Printed per run: wall time, start-up (imports, fork server: the same whatever the
concurrency), trainings done (candidates that reached training: ok, diverged, failed, timeout) and candidates
per hour over the wall time after start-up; then each run's rate against the first's.

    python benchmarks/bench_workers.py --device cpu    # toy size: --workers 1 vs 2, a few minutes on 2 cores
    python benchmarks/bench_workers.py --device cuda   # --workers-per-gpu 1 vs 4 on every visible GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from lossforge.discovery.storage.provenance import hardware_line

TRAINED = ("ok", "diverged", "failed", "timeout")  # statuses of candidates that reached training
# Per device: the concurrencies compared and the run's size. CPU is toy size; on CUDA (an H200) a training of the
# sentiment task took about 30 s at 30 steps, mostly per-training set-up, so 10 trainings take ~5 min one at a time.
DEFAULTS = {
    "cpu": {"counts": "1,2", "generations": 1, "population": 4, "steps": 8, "eval_samples": 16},
    "cuda": {"counts": "1,4", "generations": 1, "population": 8, "steps": 50, "eval_samples": 64},
}


def run_config(ns: argparse.Namespace) -> dict[str, Any]:
    """The discovery every run repeats; only the concurrency flag differs between runs."""
    return {
        "search": {
            "generations": ns.generations,
            "population": ns.population,
            "seed_candidates": ns.seed_candidates.split(","),
            "confirm": {"top_k": 0},
        },
        "training": {"task": ns.task, "steps": ns.steps, "eval_samples": ns.eval_samples},
        "seed": ns.seed,
    }


def one_run(ns: argparse.Namespace, count: int, config: Path, out: Path) -> dict[str, Any]:
    """``lossforge run`` with ``count`` concurrent trainings; its ``--json`` summary plus the bench's figures."""
    flag = "--workers-per-gpu" if ns.device == "cuda" else "--workers"
    run_dir = out / f"run-{flag.strip('-')}-{count}"
    env = {**os.environ, "LOSSFORGE_CACHE": str(out / f"cache-{count}")}
    if ns.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU threads even on a GPU machine
    command = [sys.executable, "-m", "lossforge.discovery.commands.run", "--config", str(config)]
    command += ["--out", str(run_dir), flag, str(count), "--json"]
    print(f"# {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    # stderr (live progress, warnings) passes through; stdout is the run's one JSON summary.
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the run with {flag} {count} exited {done.returncode}; its output is above")
    summary = json.loads(done.stdout)
    trainings = sum(summary["counts"].get(status, 0) for status in TRAINED)
    searching = summary["wall_s"] - summary["startup_s"]
    return {
        "flag": f"{flag} {count}",
        "wall_s": wall,
        "startup_s": summary["startup_s"],
        "train_busy_s": summary["train_busy_s"],
        "trainings": trainings,
        "counts": summary["counts"],
        "per_hour": trainings / searching * 3600 if searching > 0 else float("nan"),
        "run_dir": str(run_dir),
    }


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| concurrency | wall (s) | start-up (s) | trainings | candidates / hour | vs first |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["per_hour"] / rows[0]["per_hour"]
        lines.append(
            f"| {row['flag']} | {row['wall_s']:.1f} | {row['startup_s']:.1f} | {row['trainings']} | "
            f"{row['per_hour']:.0f} | {ratio:.2f}x |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--counts", default=None, help="concurrencies to compare (default: 1,2 on CPU, 1,4 on CUDA)")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--generations", type=int, default=None)
    parser.add_argument("--population", type=int, default=None)
    parser.add_argument("--seed-candidates", default="dpo,hinge", help="generation 0's library losses")
    parser.add_argument("--steps", type=int, default=None, help="training steps per candidate")
    parser.add_argument("--eval-samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="runs and caches go here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ns = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on
    for key, value in DEFAULTS[ns.device].items():
        if getattr(ns, key) is None:
            setattr(ns, key, value)
    if ns.device == "cuda":
        from lossforge.evaluate.gpus import visible_gpus

        if not visible_gpus():
            parser.error("--device cuda: no GPU visible (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES hides them)")
    out = ns.out or Path(tempfile.mkdtemp(prefix="lossforge-bench-workers-"))
    out.mkdir(parents=True, exist_ok=True)
    config = out / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(ns), sort_keys=False))
    print(
        f"# bench_workers: device={ns.device} task={ns.task} generations={ns.generations} population={ns.population} "
        f"seed_candidates={ns.seed_candidates} steps={ns.steps} eval_samples={ns.eval_samples} seed={ns.seed} "
        f"cpus={os.cpu_count()} out={out}",
        file=sys.stderr,
    )
    rows = [one_run(ns, int(count), config, out) for count in ns.counts.split(",")]
    print("\n".join(table(rows)))
    if ns.json:
        ns.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(ns).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
