"""`kill -9` mid-training, then `lossforge run --resume`: the run finishes with what an uninterrupted run
finishes with, nothing finished is trained twice, and a live run's directory is refused."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from lossforge.discovery.config import load_config
from lossforge.discovery.loop import LoopError, run_discovery
from lossforge.discovery.storage.archive import Archive

from tests.scripted_llm import TRAINING

CLI = [sys.executable, "-m", "lossforge.discovery.commands.run"]


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "proposer": {"kind": "evolve"},
                "search": {"generations": 1, "population": 2, "confirm": {"top_k": 0}},
                "training": TRAINING,
                "seed": 0,
            }
        )
    )
    return path


def _cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy(), check=False
    )


def _rows(run_dir: Path) -> dict[str, dict[str, object]]:
    with Archive.open(run_dir) as archive:
        return {
            r.proposal_key: {
                "id": r.id,
                "status": r.status,
                "code": r.code,
                "score": r.score,
                "updated": r.updated,
                "train_start": r.timings.get("train_start"),
            }
            for r in archive.candidates()
        }


def _wait_for_pending_training(run_dir: Path, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    """Poll the archive (read-only) until a generation-1 candidate is being trained."""
    deadline = time.monotonic() + timeout
    database = run_dir / "archive.sqlite"
    while time.monotonic() < deadline:
        assert proc.poll() is None, (
            f"the run ended before it could be killed: {proc.stderr.read() if proc.stderr else ''}"
        )
        if database.exists():
            try:
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
                    found = db.execute(
                        "SELECT COUNT(*) FROM candidates WHERE status = 'pending' AND stage = 'training' "
                        "AND generation >= 1"
                    ).fetchone()[0]
            except sqlite3.OperationalError:  # the schema is being created
                found = 0
            if found:
                return
        time.sleep(0.1)
    pytest.fail("no candidate reached training in time")


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    config_file = _config_file(tmp_path)
    # The uninterrupted run, in-process (its seeds land in the shared seed cache, as across real runs).
    reference = run_discovery(load_config(config_file), tmp_path / "reference", progress=False)
    assert reference.status == "finished" and reference.generations == 1

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, "--config", str(config_file), "--out", str(killed_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_pending_training(killed_dir, proc)
        # While it lives, its directory is locked: a resume is refused with a message.
        with pytest.raises(LoopError, match="in use by a live run"):
            run_discovery(load_config(config_file), killed_dir, resume=True, progress=False)
        before = _rows(killed_dir)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its training workers, at once
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert any(row["status"] == "pending" for row in before.values())

    resumed = _cli("--resume", str(killed_dir), "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)  # stdout holds exactly one JSON object
    assert summary["status"] == "finished" and summary["resumed"] is True and summary["generations"] == 1

    after, expected = _rows(killed_dir), _rows(tmp_path / "reference")
    # The same proposals, in the same slots and archive ids, with the same code; as many finished candidates.
    assert {k: (r["id"], r["code"]) for k, r in after.items()} == {k: (r["id"], r["code"]) for k, r in expected.items()}
    assert sorted(r["status"] for r in after.values()) == sorted(r["status"] for r in expected.values())
    assert not [k for k, r in after.items() if r["status"] == "pending"]
    # The same scores: what the resumed run trained scores as in the run that was never interrupted.
    assert {k: r["score"] for k, r in after.items()} == pytest.approx({k: r["score"] for k, r in expected.items()})
    # What was finished before the kill was not touched (not trained twice).
    finished = {key: row for key, row in before.items() if row["status"] != "pending"}
    assert finished  # the seeds of generation 0 at least
    assert {k: (after[k]["updated"], after[k]["train_start"], after[k]["score"]) for k in finished} == {
        k: (r["updated"], r["train_start"], r["score"]) for k, r in finished.items()
    }
