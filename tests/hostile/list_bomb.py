"""Hostile fixture: grows a Python list far beyond the memory limit."""

import torch.nn.functional as F

NAME = "list_bomb"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    hoard = [0] * (10**11)
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
