"""A discovery with a length-aware seed end to end at smoke size: SimPO trains beside DPO in generation 0 and
evolve proposes from both (issue 18)."""

from __future__ import annotations

from pathlib import Path

from lossforge.discovery.config import build_config
from lossforge.discovery.loop import run_discovery
from lossforge.discovery.storage.archive import Archive


def test_a_run_seeded_with_dpo_and_simpo(tmp_path: Path) -> None:
    config = build_config(
        {
            "proposer": {"kind": "evolve"},
            "search": {"generations": 1, "population": 2, "seed_candidates": ["dpo", "simpo"], "confirm": {"top_k": 0}},
            "training": {"task": "sentiment", "steps": 2, "eval_samples": 8},
        }
    )
    summary = run_discovery(config, tmp_path / "run", progress=False)
    with Archive.open(tmp_path / "run") as archive:
        rows = {row.name: row for row in archive.candidates()}
    assert rows["simpo"].status == "ok" and rows["dpo"].status == "ok", {n: r.status for n, r in rows.items()}
    assert rows["simpo"].score is not None  # at 2 steps both score the reference's level; their losses differ:
    assert rows["simpo"].metrics["train/loss"] > rows["dpo"].metrics["train/loss"] + 0.3  # softplus(1) vs ln 2
    assert rows["simpo"].profile["length_aware"] is True and rows["dpo"].profile["length_aware"] is False
    assert len(rows) == 4 and summary is not None
