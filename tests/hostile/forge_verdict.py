"""Hostile fixture (static policy off): forges the checker's verdict from inside its own process.

The loss pushes the margin down (anti-DPO: no learning signal, which the checker must reject), and the module
replaces ``margin_push``, the function the learning-signal check reads, wherever it finds it in its process
with one that always reports a strong push. Where the verdict is computed in the process that runs the
candidate, the rejected loss passes.
"""

import sys

import torch
import torch.nn.functional as F

NAME = "forge_verdict"


def _always_pushes(grad_chosen, grad_rejected):
    return torch.ones_like(grad_chosen)


for _module in list(sys.modules.values()):
    if getattr(_module, "__name__", "").startswith("lossforge.evaluate") and hasattr(_module, "margin_push"):
        _module.margin_push = _always_pushes


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return F.logsigmoid(beta * margin)
