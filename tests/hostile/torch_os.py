"""Hostile fixture: reaches os through the torch module."""

import torch
import torch.nn.functional as F

NAME = "torch_os"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    torch.os.system("touch pwned_torch_os.txt")
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
