"""Running untrusted code: the fork server that starts locked-down children (``fork_server``) and the
lock-down each child applies to itself (``lockdown``: rlimits, network namespace, seccomp, audit hook), and
Ctrl-C for the runs in progress (``interrupt``)."""

from lossforge.evaluate.isolation.fork_server import (
    Cancelled,
    IsolatedResult,
    IsolatedStatus,
    preload,
    run_isolated,
    start_server,
    warm_up,
)
from lossforge.evaluate.isolation.interrupt import cancel_running, interruptible
from lossforge.evaluate.isolation.lockdown import Limits, apply_runtime_protections

__all__ = [
    "Cancelled",
    "IsolatedResult",
    "IsolatedStatus",
    "Limits",
    "apply_runtime_protections",
    "cancel_running",
    "interruptible",
    "preload",
    "run_isolated",
    "start_server",
    "warm_up",
]
