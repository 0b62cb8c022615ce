"""The Python API from a user's script, as a new user writes it: with and without a main guard, clean exit.

Each test runs a real script in a fresh interpreter (the fork server, the resource tracker and interpreter
exit are what is under test), on the tiny task with one training step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT

# A script without `if __name__ == "__main__":`: the fork server must not run it a second time.
UNGUARDED = """
import json
from lossforge.candidates import load_library
from lossforge.evaluate import TrainConfig, check, train_candidate

print("script body ran", flush=True)
report = check(load_library()["hinge"].source)
result = train_candidate(load_library()["dpo"], TrainConfig(task="tests.tiny_task:TinyTask", steps=1, threads=1,
                         eval_samples=4))
print(json.dumps({"check": report.passed, "status": result.status, "error": result.error, "score": result.score}))
"""


def _run_script(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "experiment.py"
    script.write_text(text, encoding="utf-8")
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def test_a_script_without_a_main_guard_runs_once_and_trains(tmp_path: Path) -> None:
    completed = _run_script(tmp_path, UNGUARDED)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("script body ran") == 1, completed.stdout
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["check"] is True
    assert result["status"] == "ok" and result["error"] is None and isinstance(result["score"], float), result
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert "leaked semaphore" not in completed.stderr, completed.stderr[-3000:]


# A target defined in the script itself still reaches the child (the script is imported there on demand).
OWN_TARGET = """
from lossforge.evaluate.isolation import run_isolated


def add(a, b):
    return {"sum": a + b}


if __name__ == "__main__":
    result = run_isolated(add, 2, 3, timeout=60)
    print(result.status, result.value)
"""


def test_a_target_defined_in_the_script_still_runs(tmp_path: Path) -> None:
    completed = _run_script(tmp_path, OWN_TARGET)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "ok {'sum': 5}"
