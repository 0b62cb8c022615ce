"""``ConfigError``: the one error for invalid configuration, of a training (``TrainConfig``) or of a whole run
(``RunConfig``). It carries every problem found, each a sentence quoting the bad value and what would be valid,
so a user fixes everything in one edit."""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` lists one sentence per offending field."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")

    def one_line(self) -> str:
        """The same problems on one line, for a command's one-line error."""
        where = f" in {self.source}" if self.source else ""
        return f"invalid configuration{where}: " + "; ".join(self.problems)


__all__ = ["ConfigError"]
