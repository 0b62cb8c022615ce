"""benchmarks/suite_table.py on a real multi-task run (the noisy tasks of ``tests.noisy_scores``, confirmed on a
held-out task): a row per target and task and per task group, with the values the confirmation stored; a
directory without a run is one message, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lossforge.discovery.storage.archive import Archive

from tests.noisy_scores import heldout_run_config, run
from tests.paths import ROOT

SCRIPT = ROOT / "benchmarks" / "suite_table.py"


def test_the_table_lists_every_target_per_task_and_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path / "cache"))
    run(heldout_run_config(tmp_path / "run", seed=5), tmp_path / "run")
    shown = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "run")], capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    with Archive.open(tmp_path / "run") as archive:
        report = archive.get_meta("confirmation")
    rows = [line for line in shown.stdout.splitlines() if line.startswith("| #")]
    targets = {e["candidate_id"] for e in report["results"] if e["role"] != "reference"}
    assert len(rows) == len(targets) * (3 + 2)  # three tasks, two groups
    strong = next(e for e in report["groups"] if e["name"] == "strong" and e["group"] == "heldout")
    assert any(f"{strong['mean']:.3f}" in row and "**heldout" in row for row in rows)
    assert shown.stdout.rstrip().endswith(report["sentence"])


def test_no_run_is_one_message(tmp_path: Path) -> None:
    shown = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=False)
    assert shown.returncode == 2 and shown.stderr.strip() == f"{tmp_path}: no run there (no archive.sqlite)"
