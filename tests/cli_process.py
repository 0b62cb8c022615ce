"""`lossforge` as a user runs it, in a fresh interpreter: the launcher line and an environment in which the
test modules (tasks such as ``tests.tiny_task:TinyTask``) import."""

from __future__ import annotations

import os

from tests.paths import ROOT

LAUNCHER = "import sys; from lossforge.discovery.cli import main; sys.argv[0] = 'lossforge'; main()"


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
