"""Hostile fixture: reaches the builtins module through a legacy storage, only while training.

A TypedStorage's ``.type(str)`` imports the dotted name it is given, so ``.type("builtins.zz")`` looks a name up
in ``builtins`` (and from there ``open``, ``exec``...). It passed the old denylist policy: no name on the
chain was denied. Guarded by ``grad_fn`` (set in training, not in the checker's calls on leaf tensors).
"""

import torch
import torch.nn.functional as F

NAME = "storage_type_builtins"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.grad_fn is not None:
        torch.zeros(1).storage_type()(1).type("builtins.zz")
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
