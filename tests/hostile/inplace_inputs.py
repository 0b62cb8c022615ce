"""Hostile fixture: modifies the reference log-probs it was given."""

import torch.nn.functional as F

NAME = "inplace_inputs"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    reference_chosen_logps.mul_(0.5)
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
