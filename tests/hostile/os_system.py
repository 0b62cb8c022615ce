"""Hostile fixture: runs a shell command."""

import os

import torch.nn.functional as F

NAME = "os_system"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    os.system("touch pwned_system.txt")
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
