"""Fixtures of the suite tasks' tests: a fresh cache per test module, and one cache per session for task seed 7,
whose sentiment reference is built (not shipped), so it is trained once however many tests ask for it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def seed7_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("seed-7-cache")
