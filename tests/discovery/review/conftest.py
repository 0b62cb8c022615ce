"""The finished runs every review test reads (tests/review_runs.py), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.review_runs import review_runs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return review_runs(tmp_path_factory.mktemp("review"))
