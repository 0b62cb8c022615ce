"""Where the suite's files are, for tests at any depth of tests/."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the repository
HOSTILE = TESTS / "hostile"  # candidates written the way an adversarial model would write them
FIXTURES = TESTS / "fixtures"

__all__ = ["FIXTURES", "HOSTILE", "ROOT", "TESTS"]
