"""leaderboard / show / promote over a real archive, through the library API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lossforge.candidates import load_builtin, load_library
from lossforge.discovery.cli import app
from lossforge.discovery.review import ReviewError, leaderboard, promote, show
from lossforge.discovery.storage.archive import Archive
from typer.testing import CliRunner

DPO_SOURCE = load_builtin("dpo").source
SCALED = DPO_SOURCE.replace("return -F.logsigmoid(beta * margin)", "return -F.logsigmoid(2.0 * beta * margin)")


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    with Archive.open(tmp_path / "run") as archive:
        archive.add_candidate(
            generation=0,
            idx=0,
            name="dpo",
            code=DPO_SOURCE,
            status="ok",
            score=0.40,
            metrics={"reward": 0.40},
            proposer="seed",
        )
        archive.add_candidate(
            generation=1,
            idx=0,
            name="evo_scaled",
            code=SCALED,
            status="ok",
            score=0.55,
            metrics={"reward": 0.55},
            parents=[1],
            proposer="evolve",
            thought="doubles beta",
        )
        archive.add_candidate(
            generation=1,
            idx=1,
            name="broken",
            code="def loss(:",
            status="rejected",
            stage="parse",
            reason="invalid syntax at line 1",
        )
    return tmp_path / "run"


def test_leaderboard_ranks_trained_candidates_best_first(run_dir: Path) -> None:
    entries = leaderboard(run_dir)
    assert [(e["rank"], e["name"]) for e in entries] == [(1, "evo_scaled"), (2, "dpo")]
    everything = leaderboard(run_dir, include_all=True)
    assert everything[-1]["status"] == "rejected" and everything[-1]["rank"] is None
    assert leaderboard(run_dir, top=1)[0]["id"] == 2


def test_show_returns_code_and_lineage(run_dir: Path) -> None:
    row = show(run_dir, 2)
    assert row["parents"] == [1] and row["thought"] == "doubles beta"
    assert "2.0 * beta" in row["code"] and Path(row["code_path"]).is_file()
    with pytest.raises(ReviewError, match="no candidate 99"):
        show(run_dir, 99)


def test_promote_writes_a_loadable_user_library_file(run_dir: Path, tmp_path: Path) -> None:
    user_dir = tmp_path / "user"
    path = promote(run_dir, 2, user_dir=user_dir)
    assert path == user_dir / "evo_scaled.py"
    library = load_library(user_dir)
    promoted = library["evo_scaled"]
    assert promoted.parents == ("1",) and "candidate 2" in promoted.origin
    import torch

    args = [torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0])]
    assert torch.allclose(promoted.fn(*args, 0.1), library["dpo"].fn(*args, 0.2))


def test_promote_refuses_what_would_replace_or_is_unfinished(run_dir: Path, tmp_path: Path) -> None:
    user_dir = tmp_path / "user"
    with pytest.raises(ReviewError, match="built-in"):
        promote(run_dir, 2, name="dpo", user_dir=user_dir)
    with pytest.raises(ReviewError, match="status 'rejected'"):
        promote(run_dir, 3, user_dir=user_dir)
    promote(run_dir, 2, user_dir=user_dir)
    with pytest.raises(ReviewError, match="already exists"):
        promote(run_dir, 2, user_dir=user_dir)


def test_review_cli_json_and_usage_errors(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["leaderboard", str(run_dir), "--json"])
    assert result.exit_code == 0
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == ["evo_scaled", "dpo"]
    result = runner.invoke(app, ["show", str(run_dir), "1", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["name"] == "dpo"
    result = runner.invoke(app, ["leaderboard", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a lossforge run directory" in result.stderr
    result = runner.invoke(app, ["promote", str(run_dir), "3"])
    assert result.exit_code == 2 and "only trained candidates" in result.stderr
    result = runner.invoke(app, ["promote", str(run_dir), "2", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["name"] == "evo_scaled"


def test_promote_refuses_a_name_with_a_trailing_newline(run_dir: Path, tmp_path: Path) -> None:
    """``re.match`` with ``$`` accepts "okname\\n"; the name becomes a file name, so it must match in full."""
    user_dir = tmp_path / "user"
    for name in ("okname\n", "okname\n.py", "../okname", "OkName"):
        with pytest.raises(ReviewError, match="is not a valid loss name"):
            promote(run_dir, 2, name=name, user_dir=user_dir)
    assert not user_dir.exists()  # nothing was written
    result = CliRunner().invoke(app, ["promote", str(run_dir), "2", "--name", "okname\n", "--library", str(user_dir)])
    assert result.exit_code == 2 and not user_dir.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: name 'okname\\n' is not a valid loss name"), result.stderr
    assert promote(run_dir, 2, name="okname", user_dir=user_dir) == user_dir / "okname.py"
