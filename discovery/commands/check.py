"""`lossforge check` (to be filled in)."""

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def check() -> None:
        """Check candidate files."""
