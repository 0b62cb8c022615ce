"""Latency of the review commands on a 500-candidate run: `leaderboard`, `show`, `runs` (target < 1 s each)
and `report` (target < 10 s), each a fresh `lossforge` process timed from outside, as a user runs it.

    python benchmarks/bench_review.py [--candidates 500] [--rounds 3] [--keep DIR]

The run is synthetic but shaped like a real one (written through the Archive API): an LLM run on
``sentiment`` with 25 generations of 20 proposals; 60% trained (sentiment's metrics plus the ``train/*``
log, a full profile with loss and gradient curves at three betas, multi-seed stats on a third of them), the
rest rejected, duplicate or failed with reasons; every proposal with ~25 lines of code, a thought and an
archived LLM call (a ~6 KB prompt and its reply). Also checks that none of the commands imports torch.
Prints plain text; writes only the synthetic run (into a temporary directory unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.storage.provenance import hardware_line

CODE = """import torch
import torch.nn.functional as F

GAMMA = {gamma}


def _smooth(x):
    return F.softplus(x)


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    rho = chosen_logratios - rejected_logratios  # (B,)
    logistic = _smooth(-beta * rho)  # (B,)
    hinge = F.relu(GAMMA - beta * rho)  # (B,)
    return {mix} * logistic + (1.0 - {mix}) * hinge
"""
PROMPT = ("You propose preference-optimization losses. " * 40 + "\n") * 3
STATUSES = ["ok"] * 6 + ["rejected", "rejected", "duplicate", "failed"]
# Cold process that runs one CLI command in-process and reports whether torch got imported.
TORCH_PROBE = (
    "import sys\n"
    "from lossforge.discovery.cli import app\n"
    "try:\n"
    "    app(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write('TORCH=%s\\n' % ('torch' in sys.modules))\n"
)


def _curves(rng: random.Random) -> dict[str, object]:
    rho = [-40.0 + 2.0 * i for i in range(41)]
    scale = rng.uniform(0.5, 2.0)
    loss = {f"{b:g}": [scale * math.log1p(math.exp(-b * r)) for r in rho] for b in (0.01, 0.1, 0.5)}
    grad = {f"{b:g}": [-scale * b / (1.0 + math.exp(b * r)) for r in rho] for b in (0.01, 0.1, 0.5)}
    return {"rho": rho, "betas": [0.01, 0.1, 0.5], "loss": loss, "dloss_drho": grad}


def build_run(run_dir: Path, candidates: int, seed: int = 0) -> None:
    """A synthetic run of ``candidates`` proposals shaped like an LLM run on sentiment."""
    rng = random.Random(seed)
    population = 20
    with Archive.open(run_dir) as archive:
        archive.write_provenance(
            {
                "training": {"task": "sentiment", "beta": 0.1, "steps": 300, "eval_samples": 384, "task_options": {}},
                "search": {"generations": max(1, candidates // population - 1), "population": population},
                "proposer": {"kind": "openai", "model": "bench-model"},
                "budget": {"max_cost_usd": 20.0},
                "seed": 0,
            }
        )
        for i in range(candidates):
            generation, idx = divmod(i, population)
            status = "ok" if generation == 0 else rng.choice(STATUSES)
            code = CODE.format(gamma=round(rng.uniform(0, 2), 3), mix=round(rng.random(), 3))
            reply = json.dumps({"thought": f"mix logistic and hinge, try {i}", "name": f"cand_{i}", "code": code})
            call = archive.record_llm_row(
                {
                    "model": "bench-model",
                    "messages": [
                        {"role": "system", "content": PROMPT},
                        {"role": "user", "content": PROMPT + f"Generation {generation}."},
                    ],
                    "reply": reply,
                    "prompt_tokens": 1500,
                    "completion_tokens": 300,
                    "latency_s": 2.0,
                    "cost_usd": 0.002,
                }
            )
            fields: dict[str, object] = {
                "generation": generation,
                "idx": idx,
                "name": f"cand_{i}",
                "code": code,
                "status": status,
                "thought": f"mix logistic and hinge, try {i}",
                "proposer": "openai",
                "prompt_id": call,
                "parents": [rng.randrange(1, i + 1)] if i else [],
            }
            if status == "ok":
                reward = rng.gauss(0.4, 0.1)
                metrics = {
                    "reward": reward,
                    "kl": rng.uniform(0, 3),
                    "grammatical": rng.random(),
                    "pref_accuracy": rng.random(),
                    **{f"train/m{j}": rng.random() for j in range(8)},
                }
                profile = {
                    "rho_only": True,
                    "batch_coupled": False,
                    "stable_extremes": True,
                    "convex": i % 3 != 0,
                    "curves": _curves(rng),
                    "notes": ["convex in rho at beta 0.01, 0.1, 0.5"] * 3,
                }
                fields.update(score=reward, metrics=metrics, profile=profile, stage="done", fingerprint=f"fp{i}")
                if i % 3 == 0:
                    scores = [reward + rng.gauss(0, 0.05) for _ in range(5)]
                    mean = statistics.fmean(scores)
                    half = 2.78 * statistics.stdev(scores) / math.sqrt(5)
                    fields["stats"] = {
                        "n": 5,
                        "seeds": [0, 1, 2, 3, 4],
                        "scores": scores,
                        "mean": mean,
                        "stderr": half / 2.78,
                        "ci": [mean - half, mean + half],
                        "paired": {
                            "baseline": "dpo",
                            "baseline_id": 1,
                            "mean": mean - 0.4,
                            "ci": [mean - 0.4 - half, mean - 0.4 + half],
                            "verdict": "inconclusive",
                        },
                    }
            else:
                fields.update(
                    stage="static" if status == "rejected" else "training",
                    reason=f"{status}: a reason an LLM can act on, number {i % 7}",
                )
            archive.add_candidate(**fields)
        archive.set_meta(
            "state", {"status": "finished", "stop_reason": None, "generations": max(1, candidates // population - 1)}
        )


def time_command(args: list[str], rounds: int) -> list[float]:
    lossforge = shutil.which("lossforge") or sys.exit("the lossforge command is not on PATH (pip install -e .)")
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([lossforge, *args], check=True, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def imports_torch(args: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-c", TORCH_PROBE, *args], capture_output=True, text=True, check=False)
    return "TORCH=True" in done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build the run here and keep it")
    options = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on
    root = options.keep or Path(tempfile.mkdtemp(prefix="bench-review-"))
    run_dir = root / "run"
    began = time.perf_counter()
    build_run(run_dir, options.candidates)
    print(
        f"synthetic run: {options.candidates} candidates in {run_dir} ({time.perf_counter() - began:.1f} s to build, "
        f"{(run_dir / 'archive.sqlite').stat().st_size / 1e6:.1f} MB)"
    )
    commands = {
        "leaderboard": (["leaderboard", str(run_dir)], 1.0),
        "leaderboard --all --json": (["leaderboard", str(run_dir), "--all", "--json"], 1.0),
        "show": (["show", str(run_dir), str(options.candidates // 2)], 1.0),
        "runs": (["runs", str(root)], 1.0),
        "report": (["report", str(run_dir), "--out", str(root / "report.html")], 10.0),
    }
    print(f"load average before timing: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    baseline = time_command(["--help"], options.rounds)
    print(f"{'lossforge --help (start-up floor)':<32} p50 {statistics.median(baseline):6.3f} s")
    for label, (args, target) in commands.items():
        seconds = time_command(args, options.rounds)
        p50 = statistics.median(seconds)
        verdict = "meets" if max(seconds) < target else "MISSES"
        torch = "imports torch" if imports_torch(args) else "no torch"
        print(f"{label:<32} p50 {p50:6.3f} s  max {max(seconds):6.3f} s  target < {target:g} s: {verdict}; {torch}")
    print(
        f"report.html: {(root / 'report.html').stat().st_size / 1e6:.1f} MB; load average after: "
        f"{os.getloadavg()[0]:.2f}"
    )
    if options.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
