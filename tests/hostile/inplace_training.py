"""Hostile fixture: modifies its input in place, only in training (when the input has a graph).

The checker's "inputs not modified" check runs on leaf tensors, where ``grad_fn`` is None.
"""

import torch.nn.functional as F

NAME = "inplace_training"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.grad_fn is not None:
        policy_chosen_logps.add_(100.0)
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
