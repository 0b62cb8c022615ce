"""How the isolation tests treat an OS protection that is not active.

Where ``LOSSFORGE_STRICT_ISOLATION=1`` (``.ci/run`` sets it: CI is Linux, root, with libseccomp) seccomp and the
network namespace must be ``"on"``, so a sandbox that silently lost one fails the suite. Elsewhere (another OS,
no privileges) ``"unavailable: <reason>"`` is the graceful fallback the check report describes, and tests that
need the mechanism skip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

STRICT = os.environ.get("LOSSFORGE_STRICT_ISOLATION") == "1"
REQUIRED = ("seccomp", "network_namespace")


def assert_protections(report: Mapping[str, str]) -> None:
    """Every mechanism is reported ``on`` or ``unavailable: why``; with STRICT, the required ones are ``on``."""
    assert all(state == "on" or state.startswith("unavailable: ") for state in report.values()), report
    if STRICT:
        off = {name: report.get(name) for name in REQUIRED if report.get(name) != "on"}
        assert off == {}, f"LOSSFORGE_STRICT_ISOLATION=1 but these protections are not active: {off}"


def require(report: Mapping[str, str], name: str) -> None:
    """Skip a test that needs ``name`` where it is unavailable, unless STRICT (then it is a failure)."""
    assert report[name] == "on" or report[name].startswith("unavailable: "), report
    if report.get(name) != "on":
        assert not STRICT, f"LOSSFORGE_STRICT_ISOLATION=1 but {name} is {report.get(name)!r}"
        pytest.skip(f"{name} unavailable here: {report.get(name)}")
