"""Niches over behaviour (issue 11, item 1): candidates land in the niche their profile says, the history
mixes the global best with other niches' elites, and evolve's parents come from more than one niche."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lossforge.candidates import load_builtin
from lossforge.discovery.cli import app
from lossforge.discovery.config import build_config
from lossforge.discovery.loop import run_discovery
from lossforge.discovery.proposers.base import HistoryEntry
from lossforge.discovery.proposers.history import select_history
from lossforge.discovery.search.niches import niche_grid, niche_key, select_across_niches
from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.checking.profile import compute_profile
from lossforge.evaluate.config_error import ConfigError
from typer.testing import CliRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AXES = ("rho_only", "convex", "bounded", "targets_margin")


def _profile(name: str) -> dict:
    return compute_profile(load_builtin(name).fn).to_dict()


def test_library_losses_land_in_the_niche_their_profile_says() -> None:
    assert niche_key(_profile("dpo"), AXES) == "margin-only / convex / unbounded / margin-maximising"
    assert niche_key(_profile("ipo"), AXES) == "margin-only / convex / unbounded / margin-targeting"
    assert niche_key(_profile("exo_pair"), AXES) == "margin-only / non-convex / bounded / margin-maximising"
    assert niche_key(_profile("kto_pair"), ("batch_coupled",)) == "batch-coupled"
    assert niche_key(_profile("dpo"), ("batch_coupled", "stable_extremes")) == "per-pair / stable at extreme margins"
    assert niche_key(None, AXES) == "" and niche_key({"rho_only": True}, AXES) == ""  # undetermined axes


def _entry(i: int, score: float, niche: str) -> HistoryEntry:
    return HistoryEntry(id=i, name=f"c{i}", status="ok", code="", score=score, niche=niche)


def test_the_best_k_mixes_global_best_and_other_niches_elites() -> None:
    pool = [
        _entry(1, 0.9, "A"),
        _entry(2, 0.8, "A"),
        _entry(3, 0.7, "A"),
        _entry(4, 0.5, "B"),
        _entry(5, 0.4, "B"),
        _entry(6, 0.3, "C"),
        _entry(7, 0.2, ""),
    ]
    assert [e.id for e in select_across_niches(pool, 4, 0.5)] == [1, 2, 4, 6]  # 2 exploit + elites of B, C
    assert [e.id for e in select_across_niches(pool, 4, 0.0)] == [1, 2, 3, 4]  # all exploit: today's best-k
    assert [e.id for e in select_across_niches(pool, 4, 1.0)] == [1, 2, 4, 6]  # elites of A, B, C, then best
    best, recent = select_history(pool, 4, 2, explore=0.5)
    assert [e.id for e in best] == [1, 2, 4, 6] and [e.id for e in recent] == [7, 5]
    assert [e.id for e in select_history(pool, 4, 2)[0]] == [1, 2, 3, 4]  # niches off: as before


def test_niches_config_is_validated() -> None:
    assert build_config({"search": {"niches": ["bounded", "convex"]}}).search.niches == ("bounded", "convex")
    with pytest.raises(ConfigError, match="must name distinct traits among rho_only"):
        build_config({"search": {"niches": ["bounded", "wiggly"]}})


def test_an_evolve_run_with_niches_draws_parents_from_several_niches(tmp_path: Path) -> None:
    config = build_config(
        {
            "proposer": {"kind": "evolve"},
            "search": {
                "generations": 1,
                "population": 4,
                "repair_rounds": 0,
                "history_best_k": 4,
                "seed_candidates": ["dpo", "ipo", "exo_pair", "hinge"],
                "niches": list(AXES),
                "confirm": {"top_k": 0},
            },
            "training": {"task": "tests.tiny_task:TinyTask", "steps": 1, "eval_samples": 4},
        }
    )
    run_discovery(config, tmp_path / "run", progress=False)
    with Archive.open(tmp_path / "run") as archive:
        rows = archive.candidates()
    by_id = {row.id: row for row in rows}
    parents = [parent for row in rows if row.generation == 1 for parent in row.parents]
    assert len({niche_key(by_id[p].profile, AXES) for p in parents}) > 1, parents
    grid = {cell.niche: cell for cell in niche_grid(rows, AXES)}
    seeds = {row.name: row for row in rows if row.generation == 0}
    assert grid["margin-only / non-convex / bounded / margin-maximising"].candidates >= 1
    ipo_niche = grid["margin-only / convex / unbounded / margin-targeting"]
    assert ipo_niche.elite_id is not None and ipo_niche.scored >= 1
    assert seeds["ipo"].id in {c.elite_id for c in grid.values()} or ipo_niche.candidates > 1
    assert sum(cell.candidates for cell in grid.values()) == len(
        [r for r in rows if r.status not in ("rejected", "duplicate")]
    )

    # `leaderboard --niches` shows the same grid.
    shown = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "run"), "--niches", "--json"])
    assert shown.exit_code == 0, shown.output
    cells = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {c["niche"]: c["elite_id"] for c in cells} == {k: c.elite_id for k, c in grid.items()}
    table = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "run"), "--niches"])
    assert table.exit_code == 0 and f"{len(grid)} filled" in table.stdout
    missing = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "nowhere"), "--niches"])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ")
