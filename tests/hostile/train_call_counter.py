"""Hostile fixture (training): a module-level call counter; the loss turns NaN after three training calls.

The check calls the loss on leaf tensors and sees plain DPO; training must stop with ``diverged`` (or fail),
never score the poisoned run.
"""

import torch.nn.functional as F

NAME = "train_call_counter"

CALLS = [0]


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    losses = -F.logsigmoid(beta * margin)
    if policy_chosen_logps.grad_fn is not None:
        CALLS[0] += 1
        if CALLS[0] > 2:
            return losses * float("nan")
    return losses
