"""Latency of `lossforge.evaluate.check` over the whole candidate library: cold and warm, p50/p95.

    python benchmarks/bench_check.py [--rounds 3] [--cold-runs 3]

- cold: a fresh Python process that imports the checker and checks one candidate (interpreter start,
  imports, fork-server start with torch, the check), measured from outside the process;
- warm: every library entry checked ``--rounds`` times in one process whose fork server is running: what
  the discovery loop pays per candidate (each check still forks a fresh, locked-down child);
- baseline: a fresh interpreter that only imports torch, the floor of a "new interpreter per check" design;
- throughput of ``check_many`` with two sandboxes at a time.

The ratio baseline / warm p50 says how much the fork server saves. Prints plain text; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from lossforge.discovery.storage.provenance import hardware_line

COLD_CHILD = (
    "import json, time\n"
    "start = time.perf_counter()\n"
    "from lossforge.candidates import BUILTIN_DIR\n"
    "from lossforge.evaluate.checking.checker import check\n"
    "report = check((BUILTIN_DIR / 'dpo.py').read_text())\n"
    "print(json.dumps({'passed': report.passed, 'in_process': time.perf_counter() - start}))\n"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def describe(label: str, values: list[float]) -> str:
    return (
        f"{label:<44} n={len(values):<4} p50={percentile(values, 50):.3f} s  p95={percentile(values, 95):.3f} s  "
        f"min={min(values):.3f} s"
    )


def fresh_process(code: str) -> tuple[float, str]:
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, completed.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the library for the warm figures")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes for the cold figures")
    args = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on

    from lossforge.candidates import load_library
    from lossforge.evaluate.checking.checker import check, check_many
    from lossforge.evaluate.isolation import warm_up

    library = load_library(include_user=False)
    print(f"library: {len(library)} candidates; cpus: {os.cpu_count()}; load average: {os.getloadavg()[0]:.1f}")

    cold, cold_inside = [], []
    for _ in range(args.cold_runs):
        seconds, stdout = fresh_process(COLD_CHILD)
        cold.append(seconds)
        cold_inside.append(json.loads(stdout)["in_process"])
    baseline = [fresh_process("import torch")[0] for _ in range(args.cold_runs)]

    start = time.perf_counter()
    warm_up()
    server_start = time.perf_counter() - start
    warm, failures = [], []
    for _ in range(args.rounds):
        for name, candidate in library.items():
            report = check(candidate.source, path=name)
            warm.append(report.seconds)
            if not report.passed:
                failures.append(f"{name}: {report.errors}")
    start = time.perf_counter()
    reports = check_many([c.source for c in library.values()], workers=2)
    many_seconds = time.perf_counter() - start
    failures += [f"{r.path}: {r.errors}" for r in reports if not r.passed]

    print(f"fork-server start-up (this process):          {server_start:.3f} s")
    print(describe("cold: fresh process, first check (outside)", cold))
    print(describe("cold: same, measured inside the process", cold_inside))
    print(describe("baseline: fresh interpreter, import torch", baseline))
    print(describe("warm: check() per library entry", warm))
    print(
        f"check_many, 2 workers: {len(reports)} candidates in {many_seconds:.3f} s "
        f"({many_seconds / len(reports):.3f} s per candidate)"
    )
    ratio = percentile(baseline, 50) / percentile(warm, 50)
    print(f"ratio baseline p50 / warm p50: {ratio:.1f}x (the floor of a new interpreter per check vs. a fork)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
