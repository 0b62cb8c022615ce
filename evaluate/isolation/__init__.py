"""Running untrusted code: the fork server that starts locked-down children (``fork_server``) and the
lock-down each child applies to itself (``lockdown``: rlimits, network namespace, seccomp, audit hook)."""

from lossforge.evaluate.isolation.fork_server import (
    IsolatedResult,
    IsolatedStatus,
    preload,
    run_isolated,
    start_server,
    warm_up,
)  # fmt: skip
from lossforge.evaluate.isolation.lockdown import Limits, apply_runtime_protections

__all__ = [
    "IsolatedResult", "IsolatedStatus", "Limits", "apply_runtime_protections", "preload", "run_isolated",
    "start_server", "warm_up",
]  # fmt: skip
