"""Hostile fixture: looks up torch.load by a built string."""

import torch
import torch.nn.functional as F

NAME = "getattr_built"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    getattr(torch, "lo" + "ad")("pwned.pt")
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
