"""A known noise model for the statistics of discovery: scores that are a known function of the candidate plus
seeded noise, so per-seed scores, means, intervals, paired differences, verdicts and halving promotions can be
checked against closed-form values in milliseconds, through the real loop (real checks, archive, executor).

score(code, seed, steps) = quality(code) + COMMON * z(seed) + OWN * z(code, seed) [+ LOW * z(code) below the
full budget]. ``quality`` is the module constant ``QUALITY`` of a proposal, or ``LIBRARY_QUALITY[NAME]`` for a
library loss; z are standard normal draws from string-seeded ``random.Random``. The common term is shared by
every candidate on a seed (what common random numbers cancel); the own term is each candidate's own noise.

Run as a script (``python -m tests.noisy_scores CONFIG_JSON RUN_DIR [--resume]``) it runs a discovery with the
scripted proposer and the noisy training in a subprocess that a test can SIGKILL.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lossforge.discovery.proposers.base import Proposal, ProposalRequest, ProposerBase
from lossforge.evaluate.tasks.base import Task, TaskScore
from lossforge.evaluate.training.result import RunResult

COMMON, OWN, LOW = 0.1, 0.01, 0.05
FULL_STEPS = 8
LIBRARY_QUALITY = {"dpo": 0.0, "hinge": 0.03, "ipo": -0.3, "kto_pair": -0.02}
HEAD = (
    "import torch\nimport torch.nn.functional as F\n\nNAME = {name!r}\nQUALITY = {quality!r}\n\n\n"
    "def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
    "    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)\n"
    "    return -F.logsigmoid(beta * margin - {shift!r})\n"
)


class NoisyTask(Task):
    """The task a noisy run names (its training is replaced by ``noisy_train``); real trainings of it fail.

    It imports nothing heavy, so validating a config that names it costs milliseconds.
    """

    name = "noisy"
    default_steps = FULL_STEPS

    def cache_key(self) -> str:
        return f"{self.name}-{self.task_seed}"

    def reference(self) -> Any:
        raise RuntimeError("the noisy task has no model: its scores come from tests.noisy_scores.noisy_train")

    def preference_data(self) -> Any:
        raise RuntimeError("the noisy task has no data")

    def score(self, policy: Any, tokenizer: Any, *, seed: int) -> TaskScore:
        raise RuntimeError("the noisy task scores nothing")


TASK = "tests.noisy_scores:NoisyTask"
SCALED_TASK = "tests.noisy_scores:ScaledTask"
HELDOUT_TASK = "tests.noisy_scores:HeldoutTask"
TASK_SCALES = {SCALED_TASK: (10.0, 3.0), HELDOUT_TASK: (0.5, -1.0)}  # task -> (scale, offset) of the score
REFERENCE_QUALITY = -0.5  # the untrained policy's quality on the noisy tasks
ROOT = Path(__file__).resolve().parents[1]


def candidate_code(name: str, quality: float, shift: float) -> str:
    """A proposal of known quality; ``shift`` makes its fingerprint its own (no dedup against the others)."""
    return HEAD.format(name=name, quality=quality, shift=shift)


def _constants(code: str) -> dict[str, Any]:
    values = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def quality(code: str) -> float:
    constants = _constants(code)
    if "QUALITY" in constants:
        return float(constants["QUALITY"])
    return LIBRARY_QUALITY[str(constants.get("NAME"))]


def _z(*key: object) -> float:
    return random.Random(":".join(map(str, key))).gauss(0.0, 1.0)


def expected_score(code: str, seed: int, steps: int | None = None, task: str | None = None) -> float:
    """The known score; on a task of ``TASK_SCALES`` on its scale, with its own noise; at 0 steps the untrained
    reference's."""
    own = hashlib.sha256(code.encode()).hexdigest()[:12]
    scaled = task in TASK_SCALES
    if steps == 0:  # no step trained: the reference policy, whatever the loss
        score = REFERENCE_QUALITY + COMMON * _z("common", seed)
    else:
        score = (
            quality(code) + COMMON * _z("common", seed) + OWN * (_z(own, seed, "scaled") if scaled else _z(own, seed))
        )
    if steps is not None and 0 < steps < FULL_STEPS:  # a low-fidelity run: noisier, by a candidate-fixed amount
        score += LOW * _z(own, "low")
    if not scaled:
        return score
    scale, offset = TASK_SCALES[task]  # type: ignore[index]
    return scale * score + offset


def noisy_train(code: str, config: Any) -> RunResult:
    """The training stand-in: the known score; appends ``code-hash seed steps`` to ``$NOISY_LOG`` when set."""
    if os.environ.get("NOISY_SLEEP"):
        time.sleep(float(os.environ["NOISY_SLEEP"]))
    log = os.environ.get("NOISY_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(
                f"{hashlib.sha256(code.encode()).hexdigest()[:12]} {config.task} {config.beta} {config.seed} "
                f"{config.steps}\n"
            )
    score = expected_score(code, config.seed, config.steps, config.task)
    return RunResult(status="ok", score=score, metrics={"quality": quality(code)}, timings={"training": 0.0})


class ScriptedProposer(ProposerBase):
    """Proposes ``plan[generation][index]`` = (name, quality, shift)."""

    name = "scripted"

    def __init__(self, plan: dict[int, list[tuple[str, float, float]]]) -> None:
        self.plan = plan

    def propose(self, request: ProposalRequest) -> Proposal:
        name, value, shift = self.plan[request.generation][request.index]
        return Proposal(
            code=candidate_code(name, value, shift), name=name, thought="known quality", proposer="scripted"
        )


def run_until_killed(
    config_data: dict[str, Any], run_dir: Path, *, log: Path, sleep: float, ready: Callable[[Path], bool], what: str
) -> None:
    """Run a discovery in a subprocess (each training sleeping ``sleep`` s and logged to ``log``) and SIGKILL it
    as soon as ``ready(run_dir)``; ``what`` names the moment in the failure message if it never comes."""
    config_file = run_dir.parent / f"{run_dir.name}.json"
    config_file.write_text(json.dumps(config_data))
    env = {**os.environ, "NOISY_SLEEP": str(sleep), "NOISY_LOG": str(log)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.noisy_scores", str(config_file), str(run_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready(run_dir):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, f"{what} did not come in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def count_rows(run_dir: Path, query: str) -> int:
    """``SELECT COUNT(*) ...`` on a run's archive read-only while it is written; 0 before the table exists."""
    try:
        with sqlite3.connect(f"file:{run_dir / 'archive.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute(query).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def heldout_run_config(run_dir: Path, *, seed: int) -> dict[str, Any]:
    """A run on ``TASK`` and ``SCALED_TASK`` (2 seeds), one proposal of known quality, dpo and hinge, confirmed on
    3 held-out seeds and on ``HELDOUT_TASK``: the smallest run with every part of a multi-task verdict."""
    return {
        "plan": {1: [("strong", 0.2, 0.1)]},
        "search": {
            "generations": 1,
            "population": 1,
            "seed_candidates": ["dpo", "hinge"],
            "confirm": {"top_k": 1, "seeds": 3, "tasks": [HELDOUT_TASK]},
        },
        "training": {"tasks": [TASK, SCALED_TASK], "seeds": 2, "steps": 8},
        "seed": seed,
        "out": str(run_dir),
    }


def run(config_data: dict[str, Any], run_dir: Path, *, resume: bool = False) -> Any:
    from lossforge.discovery.config import build_config
    from lossforge.discovery.loop import run_discovery

    plan = {int(g): [tuple(item) for item in items] for g, items in config_data.pop("plan").items()}
    config = build_config(config_data)
    return run_discovery(
        config,
        run_dir,
        resume=resume,
        progress=False,
        proposer=ScriptedProposer(plan),  # type: ignore[arg-type]
        train=noisy_train,
    )


if __name__ == "__main__":
    summary = run(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), resume="--resume" in sys.argv)
    print(json.dumps(summary.to_dict(), default=str))


class ScaledTask(NoisyTask):
    """A second noisy task on another scale (``TASK_SCALES``) with its own candidate noise."""

    name = "scaled"


class HeldoutTask(NoisyTask):
    """A third noisy task on a third scale, for confirmation on tasks the search never used."""

    name = "heldout"


class UnscoredTask(NoisyTask):
    """Another task for confirmation (transfer) on which every real training fails."""

    name = "unscored"
