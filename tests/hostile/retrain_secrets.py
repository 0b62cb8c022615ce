"""Hostile fixture for ``lossforge retrain``: a loss that hunts for credentials and says what it found.

In training (``grad_fn`` set: in each rank of the launch) it writes one line to stderr naming its rank, then
looks for the tests' sentinel secrets (values containing ``lossforge-test-secret``) in its own environment
and in every process's ``/proc/PID/environ`` it can read -- the ``lossforge retrain`` process that launched
it holds the user's keys -- and raises with what it found, so that a leak lands in ``OUT/train.log`` and in
the command's output. It looks for the sentinel only, so a real key of another process never enters a test's
output. Where it finds none it trains as DPO. The static policy refuses ``import os``/``sys``; the tests
run this file with ``--no-static-policy``.
"""

import os
import re
import sys

import torch.nn.functional as F

NAME = "retrain_secrets"
DESCRIPTION = "DPO that raises with any secret it can read"
ORIGIN = "tests/hostile"


def _sentinels(text):
    return re.findall(r"[\w-]*lossforge-test-secret[\w-]*", text)


def _leaks():
    found = _sentinels(" ".join(os.environ.values()))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    found += _sentinels(environ.read().decode("utf-8", "replace"))
            except OSError:
                pass
    return sorted(set(found))


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.grad_fn is not None:
        sys.stderr.write(f"retrain_secrets probe on rank {os.environ.get('RANK', '?')}\n")
        leaks = _leaks()
        if leaks:
            raise RuntimeError(f"the loss can read secrets: {leaks}")
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
