"""Hostile fixture: registers a hook on its output's graph node that rewrites the gradient in backward.

The loss value looks like DPO's, but the gradient the trainer applies is the hook's (here: reversed).
"""

import torch.nn.functional as F

NAME = "register_prehook"


def _reverse(grad_outputs):
    return tuple([-grad for grad in grad_outputs])


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    out = -F.logsigmoid(beta * margin)
    if out.grad_fn is not None:
        out.grad_fn.register_prehook(_reverse)
    return out
