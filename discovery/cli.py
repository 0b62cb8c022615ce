"""The `lossforge` command line: parse -> build config -> call a library function."""

from __future__ import annotations

import typer
from lossforge.discovery.commands import (
    check,
    compare,
    confirm,
    leaderboard,
    plot,
    promote,
    report,
    retrain,
    run,
    runs,
    show,
    train,
)

app = typer.Typer(
    name="lossforge",
    help="Discover preference-optimization objectives with an LLM or an evolutionary search in the loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for command_module in (check, train, run, confirm, runs, leaderboard, show, promote, plot, report, compare, retrain):
    command_module.register(app)


def main() -> None:
    app()
