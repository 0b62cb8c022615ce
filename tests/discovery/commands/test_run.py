"""`lossforge run`: bad input gets exit code 2 and one clear message, no traceback; --json keeps stdout JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from lossforge.discovery.commands import run as run_command
from typer.testing import CliRunner

from tests.openai_server import OpenAIServer, openai_server

__all__ = ["openai_server"]  # the fixture, imported so pytest finds it


@pytest.fixture
def invoke() -> Callable[..., object]:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    run_command.register(app)
    app.command("noop")(lambda: None)  # a second command keeps `run` a subcommand, as in the real CLI
    runner = CliRunner()

    def call(*args: str) -> object:
        return runner.invoke(app, ["run", *args], catch_exceptions=False)

    return call


def _assert_clear_error(result: object, *needles: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr and stderr.startswith("error: ")
    for needle in needles:
        assert needle in stderr, stderr


def test_invalid_config_file(invoke: Callable[..., object], tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("search:\n  population: 0\n  generationz: 3\nproposer:\n  kind: gpt\n")
    result = invoke("--config", str(config), "--out", str(tmp_path / "run"))
    _assert_clear_error(result, "invalid configuration in", "search.population", "generationz", "'gpt' is not one of")
    assert not (tmp_path / "run").exists()


def test_openai_requires_a_model(invoke: Callable[..., object], tmp_path: Path) -> None:
    _assert_clear_error(
        invoke("--proposer", "openai", "--out", str(tmp_path / "r")), "needs the LLM's model name: --llm-model"
    )


def test_unreachable_endpoint(invoke: Callable[..., object], tmp_path: Path) -> None:
    result = invoke(
        "--proposer",
        "openai",
        "--model",
        "m",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--out",
        str(tmp_path / "r"),
        "--json",
    )
    _assert_clear_error(result, "could not reach http://127.0.0.1:9/v1")
    payload = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert payload["status"] == "error" and "could not reach" in payload["error"]


def test_wrong_api_key(
    invoke: Callable[..., object],
    tmp_path: Path,
    openai_server: Callable[..., OpenAIServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = openai_server([], api_key="sk-right")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    result = invoke(
        "--proposer", "openai", "--model", "fake-model", "--base-url", server.base_url, "--out", str(tmp_path / "r")
    )
    _assert_clear_error(result, "rejected the API key")


def test_unknown_model(
    invoke: Callable[..., object], tmp_path: Path, openai_server: Callable[..., OpenAIServer]
) -> None:
    server = openai_server([], models=["served-model"])
    result = invoke(
        "--proposer", "openai", "--model", "nope", "--base-url", server.base_url, "--out", str(tmp_path / "r")
    )
    _assert_clear_error(result, "model 'nope' is not served", "served-model", "check --llm-model")


def test_resume_refuses_what_would_change_the_run(invoke: Callable[..., object], tmp_path: Path) -> None:
    _assert_clear_error(invoke("--resume", str(tmp_path)), "holds no run to resume")
    result = invoke("--resume", str(tmp_path), "--population", "3", "--task", "arithmetic")
    _assert_clear_error(result, "--population, --task cannot change a run being resumed", "--generations")


def test_run_is_registered_in_the_lossforge_cli() -> None:
    from lossforge.discovery.cli import app

    names = {command.name or command.callback.__name__ for command in app.registered_commands}  # type: ignore[union-attr]
    assert "run" in names


def test_unexpected_failure_aborts_with_exit_1_and_how_to_resume(
    invoke: Callable[..., object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lossforge.discovery import loop

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loop, "run_discovery", explode)
    result = invoke("--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert f"lossforge run --resume {tmp_path / 'r'}" in result.stderr  # type: ignore[attr-defined]
    assert json.loads(result.stdout)["status"] == "aborted"  # type: ignore[attr-defined]


def test_config_resolution_defaults_flags_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lossforge.discovery.storage.archive import Archive

    monkeypatch.chdir(tmp_path)
    config, out = run_command.resolve_config(None, None, {"population": 3, "seed": 5})
    assert out.parent == Path("lossforge-runs") and out.name[:2] == "20"  # ./lossforge-runs/<timestamp>
    assert (config.search.population, config.seed, config.proposer.kind) == (3, 5, "evolve")
    with Archive.open(tmp_path / "old") as archive:
        archive.set_meta("config", config.resolved())
    resumed, out = run_command.resolve_config(None, tmp_path / "old", {"generations": 7, "workers": 2})
    assert out == tmp_path / "old"
    assert (resumed.search.generations, resumed.execution.workers, resumed.search.population) == (7, 2, 3)


def test_confirmation_is_on_by_default_and_the_seed_flags_set_it(
    invoke: Callable[..., object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    default, _ = run_command.resolve_config(None, None, {})
    assert (default.search.confirm.top_k, default.search.confirm.seeds, default.training.seeds) == (3, 5, 1)
    flags = {"seeds": 3, "confirm_top": 0, "confirm_seeds": 4}
    config, _ = run_command.resolve_config(None, None, flags)
    assert (config.search.confirm.top_k, config.search.confirm.seeds, config.training.seeds) == (0, 4, 3)
    _assert_clear_error(invoke("--confirm-seeds", "1", "--out", str(tmp_path / "r")), "search.confirm.seeds")
    _assert_clear_error(invoke("--confirm-top", "-1", "--out", str(tmp_path / "r")), "search.confirm.top_k")
    _assert_clear_error(
        invoke("--resume", str(tmp_path), "--confirm-top", "0"), "--confirm-top cannot change a run being resumed"
    )
    assert not (tmp_path / "r").exists()  # nothing was started


def test_progress_goes_to_stderr_as_lines_off_a_terminal() -> None:
    import io
    from types import SimpleNamespace

    from lossforge.discovery.progress import Cost, RichProgress
    from rich.console import Console

    leaky = "importing `os` is not allowed\nmore"
    rows = [
        SimpleNamespace(id=7, idx=0, repair_round=0, status="ok", name="shifted", score=0.25, reason=None),
        SimpleNamespace(id=8, idx=1, repair_round=0, status="rejected", name="leaky", score=None, reason=leaky),
    ]
    buffer = io.StringIO()
    progress = RichProgress(Console(file=buffer, force_terminal=False, width=120))
    progress.start(2, 2, 4, cost=Cost(search=8, confirmation=0))
    progress.use_archive(lambda generation: rows if generation == 1 else [])
    progress.generation(1)
    progress.stage(1, 0, "training", name="shifted")
    progress.finished(1, 0, "ok", name="shifted", score=0.25)
    progress.finished(1, 1, "rejected", name="leaky", reason=leaky)
    progress.llm(3, 1200, 0.0042)
    progress.stop()
    lines = buffer.getvalue().splitlines()
    assert lines == [
        (
            "lossforge run: 4 library losses, then 2 generation(s) x 2 proposals; up to 8 search trainings (each "
            "candidate on 1 seed); no confirmation (search.confirm.top_k is 0)"
        ),
        "generation 1 of 2",
        "  g1 #7 shifted: ok 0.25  [1/8 trainings]",  # trained in no time: a cached result, no estimate
        "  g1 #8 leaky: rejected (importing `os` is not allowed)",  # the archive ids, not the slots
    ]
    live = io.StringIO()
    Console(file=live, width=120).print(progress.render())
    assert "1/8 trainings  |  LLM 3 calls, 1200 tokens, $0.0042" in live.getvalue()
    assert "best so far: shifted (#7) 0.25" in live.getvalue()
