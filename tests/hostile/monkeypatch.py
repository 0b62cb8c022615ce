"""Hostile fixture: replaces a torch function for the whole process."""

import torch
import torch.nn.functional as F

NAME = "monkeypatch"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    torch.sigmoid = torch.tanh
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
