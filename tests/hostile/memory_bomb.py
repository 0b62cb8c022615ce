"""Hostile fixture: allocates far more memory than the sandbox allows."""

import torch
import torch.nn.functional as F

NAME = "memory_bomb"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    hoard = torch.ones(10**11)
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
