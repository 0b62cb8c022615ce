"""Shared test setup: every test session gets its own cache and user library, so nothing touches ~/."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_lossforge_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A session-wide cache lets tests share the SFT reference and reference log-probs, as a real run does.
    os.environ.setdefault("LOSSFORGE_CACHE", str(tmp_path_factory.mktemp("lossforge-cache")))
    os.environ["LOSSFORGE_HOME"] = str(tmp_path_factory.mktemp("lossforge-home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _sigint_as_from_a_terminal() -> None:
    # The Ctrl-C tests send SIGINT to the commands they start, as a terminal does. A shell without job control
    # starts a background job (`bash .ci/run &`) with SIGINT ignored, every child inherits that, and Python then
    # installs no KeyboardInterrupt handler: the commands would never see the Ctrl-C. Restore the default here,
    # so the children start as they would from a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a test module on one torch thread (tiny tensors and models; see lossforge.evaluate.threads).

    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    from lossforge.evaluate.threads import torch_threads

    with torch_threads(1):
        yield
