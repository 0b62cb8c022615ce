"""Hostile fixture: unpickles a file with torch.load."""

import torch
import torch.nn.functional as F

NAME = "torch_load"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    torch.load("pwned.pt")
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
