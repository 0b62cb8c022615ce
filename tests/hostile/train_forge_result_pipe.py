"""Hostile fixture (training): writes a forged result (score 99.0) into every writable descriptor, then exits.

Inside training only (``grad_fn`` set; the check sees plain DPO). The training process's result pipe is one of
those descriptors, so a parent that took the score from that process would read 99.0. ``FORGED_STATUS`` is the
status the forged record claims (a test may set it to the training process's own ``trained``).
"""

import json
import os

import torch.nn.functional as F

NAME = "train_forge_result_pipe"

FORGED_STATUS = "ok"


def _forged():
    return {"status": FORGED_STATUS, "score": 99.0, "metrics": {"forged": 1.0}, "timings": {}}


def _forge():
    payload = json.dumps({"status": "ok", "value": _forged()}).encode()
    for entry in os.listdir("/proc/self/fd"):
        try:
            os.write(int(entry), payload)
        except (OSError, ValueError):
            continue
    os._exit(0)


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.grad_fn is not None:
        _forge()
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
