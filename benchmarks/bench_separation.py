"""What it costs that the score and the verdicts are computed where the candidate never ran (issue 16).

    python benchmarks/bench_separation.py [--rounds 3] [--task sentiment] [--trainings 2] [--threads 1]

(a) check: every library loss, checked two ways in alternation in the same process and fork server:
    - separated (what ships): the locked-down child only answers calls; the runtime checks, the profile and the
      fingerprint are computed in the parent (``run_sandbox``);
    - judged in the child (the design before issue 16, rebuilt here for the comparison): one isolated child
      locks itself down, compiles the loss and runs the same checks and profile on it in its own process.
    Both give the same profile (asserted), so the difference is the price of the round trips.
(b) training: ``train_candidate(dpo)`` at the task's default budget; the separated design scores in a second
    process, and the figure is that process's whole share of the wall time (its fork, task set-up, model and
    adapter load; the scoring itself was paid before too), from the result's ``timings``.

Prints plain text and ratios; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from lossforge.discovery.storage.provenance import hardware_line


def judged_in_child(code: str, limits: Any) -> dict[str, Any]:
    """The old design: verdicts computed in the process that runs the candidate."""
    import torch
    from lossforge.evaluate.checking.profile import compute_profile
    from lossforge.evaluate.checking.runtime_checks import run_runtime_checks
    from lossforge.evaluate.contract import compile_loss
    from lossforge.evaluate.isolation import apply_runtime_protections

    torch.set_num_threads(1)
    apply_runtime_protections(limits)
    fn = compile_loss(code)
    findings = run_runtime_checks(fn)
    profile = compute_profile(fn).to_dict() if not findings.errors else None
    return {"errors": findings.errors, "fingerprint": profile and profile["fingerprint"]}


def part_a(rounds: int) -> None:
    from lossforge.candidates import load_library
    from lossforge.evaluate.checking.sandbox import run_sandbox
    from lossforge.evaluate.isolation import Limits, run_isolated, warm_up

    warm_up()
    library = load_library(include_user=False)
    separated: list[float] = []
    in_child: list[float] = []
    for _ in range(rounds):
        for name, candidate in library.items():
            start = time.perf_counter()
            outcome = run_sandbox(candidate.source)
            separated.append(time.perf_counter() - start)
            start = time.perf_counter()
            old = run_isolated(judged_in_child, candidate.source, Limits())
            in_child.append(time.perf_counter() - start)
            assert old.status == "ok" and old.value["fingerprint"] == outcome.fingerprint, (name, old, outcome)
    a, b = statistics.median(separated), statistics.median(in_child)
    print(f"(a) check, {len(library)} library losses x {rounds} rounds, median per check:")
    print(f"    verdicts in the parent (ships):  {a * 1000:7.1f} ms   mean {statistics.mean(separated) * 1000:7.1f} ms")
    print(f"    verdicts in the child (before):  {b * 1000:7.1f} ms   mean {statistics.mean(in_child) * 1000:7.1f} ms")
    print(f"    ratio {a / b:.2f}, difference {(a - b) * 1000:+.1f} ms per check")


def part_b(task: str, trainings: int, threads: int) -> None:
    from lossforge.candidates import load_builtin
    from lossforge.evaluate.training.config import TrainConfig
    from lossforge.evaluate.training.launcher import train_candidate

    dpo = load_builtin("dpo")
    rows = []
    for seed in range(trainings):
        start = time.perf_counter()
        result = train_candidate(dpo, TrainConfig(task=task, seed=seed, threads=threads))
        wall = time.perf_counter() - start
        assert result.status == "ok", result
        rows.append((wall, result.timings))
        print(
            f"    seed {seed}: wall {wall:.2f} s, timings "
            + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
        )
    walls = [wall for wall, _ in rows]
    scorer = [timings.get("scoring_process", float("nan")) for _, timings in rows]
    setup = [timings.get("scoring_setup", float("nan")) for _, timings in rows]
    print(f"(b) training, {task} at its default budget, {trainings} trainings of dpo:")
    print(
        f"    median wall {statistics.median(walls):.2f} s; the scoring process {statistics.median(scorer):.2f} s of it"
    )
    print(
        f"    of which set-up (fork, task, model and adapter load; new with the separation) "
        f"{statistics.median(setup):.2f} s = {statistics.median(setup) / statistics.median(walls):.1%} of the wall"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the library for (a)")
    parser.add_argument("--task", default="sentiment", help="task for (b)")
    parser.add_argument("--trainings", type=int, default=2, help="default-budget trainings for (b); 0 skips (b)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    args = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on
    # Name every module the fork server preloads before it starts, as the CLI and the loop do at start-up:
    # otherwise each training and scoring process would import transformers, TRL and PEFT itself.
    import lossforge.evaluate.training.launcher  # noqa: F401

    part_a(args.rounds)
    if args.trainings:
        part_b(args.task, args.trainings, args.threads)


if __name__ == "__main__":
    main()
