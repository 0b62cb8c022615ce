"""Does a cheap fitness predict full-scale results? Every library loss that DiscoPOP trained at 7B, trained on each
built-in task on the same seeds, against the published numbers (issue 19, item 4).

The published side (DiscoPOP, arXiv 2406.08414, and its repository's alpaca_eval result files: zephyr-7b-gemma-sft
on argilla/dpo-mix-7k, beta 0.05, one training per loss) is ``PUBLISHED``: MT-Bench, AlpacaEval 2 length-controlled
win rate against the SFT model, TL;DR win rate against the SFT model. The three benchmarks disagree on many pairs,
so the target is the pairs all three order alike (``agreed_pairs(3)``, e.g. PADLL > DPO > KTO), then those two of
three order alike.

For each task: every loss on ``--seeds`` calibration seeds (5000, 5001, ...: neither the search seeds of a run nor
its held-out seeds), the untrained reference (``steps=0``) on the same seeds, then
- the losses ordered by mean with 95% intervals;
- each target pair: the paired difference on common seeds with its interval, counted as agreeing or disagreeing
  only where the interval excludes 0 (unresolved otherwise);
- Spearman's rho between the task's means and each published column (losses present in both).
The aggregates normalize each task as the search does (``stats.multi_task``: the reference's mean at 0, DPO's
at 1) and take the mean (or ``--aggregate min``) over the default suite's search tasks, over its held-out tasks
and over all the tasks given. Usage::

    python benchmarks/bench_proxy.py [--tasks sentiment,arithmetic] [--seeds 5] [--steps N] [--beta B]
        [--learning-rate LR] [--aggregate mean|min] [--workers 2] [--out proxy.json]

``--out`` keeps every finished training; a rerun with the same file trains only what is missing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from lossforge.discovery.stats.multi_task import Aggregate, TaskScale, combine
from lossforge.discovery.stats.statistics import confidence_interval, mean, spearman, verdict
from lossforge.discovery.storage.provenance import hardware_line
from lossforge.discovery.suites import suite

BENCHMARKS = ("mt_bench", "alpaca_eval2_lc", "tldr")
# loss -> (MT-Bench, AlpacaEval 2 LC win rate vs SFT, TL;DR win rate vs SFT); None: not reported.
PUBLISHED: dict[str, tuple[float, float | None, float | None]] = {
    "dbaql": (7.978, 54.40, 52.55),
    "aql": (7.953, 60.95, 47.60),
    "padll": (7.941, 64.15, 55.34),
    "aqfl": (7.931, 64.41, 49.57),
    "cell": (7.925, 57.48, 50.35),
    "lrml": (7.916, 65.18, 53.46),
    "pfl": (7.900, 56.14, 44.12),
    "dpo": (7.888, 63.34, 54.39),
    "hinge": (7.881, 59.67, 53.03),
    "ipo": (7.840, None, None),
    "kto_pair": (7.603, 62.76, 51.16),
}
CALIBRATION_SEED = 5000
REFERENCE = "reference"  # the untrained model, scored with steps=0
SETTINGS_KEY = "_settings"  # the --out file's record of the training settings its trainings used


def agreed_pairs(benchmarks: int) -> list[tuple[str, str]]:
    """(better, worse) pairs that exactly ``benchmarks`` of the three published columns order alike, the third (when
    ``benchmarks`` is 2) reported and ordering them the other way; pairs with a missing column count only at 3 if all
    three are there."""
    pairs = []
    for a, b in itertools.combinations(PUBLISHED, 2):
        both = [(x, y) for x, y in zip(PUBLISHED[a], PUBLISHED[b], strict=True) if x is not None and y is not None]
        if len(both) < 3:
            continue
        wins = sum(x > y for x, y in both)
        losses = sum(x < y for x, y in both)
        if max(wins, losses) == benchmarks:
            pairs.append((a, b) if wins > losses else (b, a))
    return pairs


def paired(scores: dict[str, dict[int, float]], better: str, worse: str) -> dict[str, Any]:
    """``better - worse`` per common seed: mean, 95% interval and verdict (``better``: the proxy agrees)."""
    common = sorted(set(scores.get(better, {})) & set(scores.get(worse, {})))
    diffs = [scores[better][s] - scores[worse][s] for s in common]
    ci = confidence_interval(diffs) if len(diffs) > 1 else None
    return {
        "pair": [better, worse],
        "n": len(diffs),
        "mean": mean(diffs) if diffs else None,
        "ci": ci,
        "verdict": verdict(ci),
    }


def normalized(scores: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    """Each loss's per-seed score normalized as the search normalizes it (``stats.multi_task.TaskScale``): the
    reference's mean over seeds at 0, DPO's at 1."""
    scale = TaskScale.of("task", list(scores[REFERENCE].values()), list(scores["dpo"].values()))
    return {
        loss: {seed: scale.normalize(value) for seed, value in by_seed.items()}
        for loss, by_seed in scores.items()
        if loss != REFERENCE
    }


def across_tasks(per_task: list[dict[str, dict[int, float]]], how: Aggregate = "mean") -> dict[str, dict[int, float]]:
    """Each loss's per-seed ``mean`` (or ``min``) over tasks of its normalized scores (``stats.multi_task.combine``),
    on the seeds every task has for it."""
    losses = set.intersection(*(set(scores) for scores in per_task)) if per_task else set()
    return {loss: combine({str(i): scores[loss] for i, scores in enumerate(per_task)}, how) for loss in losses}


def summary(scores: dict[str, dict[int, float]]) -> dict[str, Any]:
    """Order, target pairs and rank correlations of one task's (or the aggregate's) per-seed scores."""
    means = {loss: mean(list(by_seed.values())) for loss, by_seed in scores.items() if by_seed}
    order = sorted((loss for loss in means if loss != REFERENCE), key=lambda loss: -means[loss])
    rows = [
        {"loss": loss, "mean": means[loss], "ci": confidence_interval(list(scores[loss].values()))} for loss in order
    ]
    targets = {str(k): [paired(scores, a, b) for a, b in agreed_pairs(k)] for k in (3, 2)}
    rho = {}
    for column, name in enumerate(BENCHMARKS):
        shared = [loss for loss in order if PUBLISHED.get(loss, (None,) * 3)[column] is not None]
        if len(shared) > 2:
            rho[name] = spearman([means[loss] for loss in shared], [PUBLISHED[loss][column] for loss in shared])
    return {"order": rows, "targets": targets, "spearman": rho}


def _interval(ci: list[float] | None) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "-"


def report_lines(title: str, result: dict[str, Any]) -> list[str]:
    lines = [f"## {title}", "", "| loss | mean | 95% CI |", "|---|---|---|"]
    lines += [f"| {r['loss']} | {r['mean']:+.4f} | {_interval(r['ci'])} |" for r in result["order"]]
    for k, entries in result["targets"].items():
        agree = sum(e["verdict"] == "better" for e in entries)
        disagree = sum(e["verdict"] == "worse" for e in entries)
        unresolved = len(entries) - agree - disagree
        heading = (
            f"pairs {k} of the 3 published benchmarks order alike: {agree} reproduced, {disagree} reversed, "
            f"{unresolved} unresolved of {len(entries)}"
        )
        lines += ["", heading]
        for e in entries:
            better, worse = e["pair"]
            shown = "-" if e["mean"] is None else f"{e['mean']:+.4f}"
            lines.append(f"- {better} > {worse}: {shown} {_interval(e['ci'])} {e['verdict']}")
    rho = ", ".join(f"{name} {value:+.2f}" for name, value in result["spearman"].items())
    return [*lines, "", f"Spearman rho with the published columns: {rho}", ""]


def _train_all(tasks: list[str], seeds: list[int], settings: dict[str, Any], workers: int, out: Path) -> dict[str, Any]:
    """Every (task, loss, seed) training with ``settings`` (steps, beta, learning rate: None is the task's default),
    those already in ``out`` read from it; ``out`` is rewritten after each one, so a killed benchmark continues
    where it stopped. A file written with other settings is refused rather than mixed in."""
    from lossforge.candidates import load_library
    from lossforge.discovery.executors import make_executor
    from lossforge.discovery.scoring.seed_training import train_on_seeds
    from lossforge.discovery.stats.seed_stats import SeedRun
    from lossforge.evaluate.training.config import TrainConfig
    from lossforge.evaluate.training.launcher import train_candidate
    from lossforge.evaluate.training.result import RunResult

    done: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {SETTINGS_KEY: settings}
    if done.get(SETTINGS_KEY) != settings:
        raise SystemExit(f"{out} holds trainings with {done.get(SETTINGS_KEY)}, not {settings}: give another --out")
    library = load_library()
    losses = [loss for loss in PUBLISHED if loss in library]
    keys = [f"{task}/{loss}/{seed}" for task in tasks for loss in [REFERENCE, *losses] for seed in seeds]
    finished = sum(key in done for key in keys)
    print(f"{len(keys)} trainings, {finished} already in {out}", flush=True)
    executor = make_executor("local", workers)
    started = time.time()
    try:
        for task, loss in itertools.product(tasks, [REFERENCE, *losses]):
            prefix = f"{task}/{loss}"

            def earlier(seed: int, prefix: str = prefix) -> SeedRun | None:
                stored = done.get(f"{prefix}/{seed}")
                return None if stored is None else SeedRun(seed, RunResult(stored["status"], stored["score"]))

            def store(run: SeedRun, prefix: str = prefix) -> None:
                nonlocal finished
                finished += 1
                done[f"{prefix}/{run.seed}"] = {"status": run.result.status, "score": run.result.score}
                out.write_text(json.dumps(done, indent=1, sort_keys=True))
                print(
                    f"{finished}/{len(keys)} {prefix} {run.seed}: {run.result.status} {run.result.score} "
                    f"({time.time() - started:.0f} s)",
                    flush=True,
                )

            code = library["dpo" if loss == REFERENCE else loss].source
            steps = 0 if loss == REFERENCE else settings["steps"]
            config = TrainConfig(
                task=task,
                steps=steps,
                beta=settings["beta"],
                learning_rate=settings["learning_rate"],
                threads=1,
            )
            train_on_seeds(executor, train_candidate, code, config, seeds, earlier=earlier, store=store)
    finally:
        executor.shutdown()
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = suite("default")
    parser.add_argument("--tasks", default=",".join((*default.search, *default.heldout)))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: each task's own)")
    parser.add_argument("--beta", type=float, default=None, help="the losses' beta (default: each task's own)")
    parser.add_argument("--learning-rate", type=float, default=None, help="(default: each task's own)")
    parser.add_argument("--aggregate", choices=("mean", "min"), default="mean")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("proxy.json"))
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    seeds = [CALIBRATION_SEED + i for i in range(args.seeds)]
    settings = {"steps": args.steps, "beta": args.beta, "learning_rate": args.learning_rate}
    print(hardware_line(), flush=True)
    done = _train_all(tasks, seeds, settings, args.workers, args.out)
    per_task: dict[str, dict[str, dict[int, float]]] = {}
    for key, entry in done.items():
        if key == SETTINGS_KEY:
            continue
        task, loss, seed = key.rsplit("/", 2)
        if task in tasks and int(seed) in seeds and entry["status"] == "ok" and entry["score"] is not None:
            per_task.setdefault(task, {}).setdefault(loss, {})[int(seed)] = float(entry["score"])
    lines = [f"settings: {settings} (None: the task's default); seeds {seeds}", ""]
    for task in tasks:
        lines += report_lines(task, summary(per_task.get(task, {})))
    groups = {"search tasks of the default suite": default.search, "held-out tasks": default.heldout, "all": tasks}
    for title, members in groups.items():
        chosen = [task for task in tasks if task in members]
        if chosen:
            combined = across_tasks([normalized(per_task.get(task, {})) for task in chosen], args.aggregate)
            heading = f"aggregate, {title} ({', '.join(chosen)}; {args.aggregate} of normalized scores)"
            lines += report_lines(heading, summary(combined))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
