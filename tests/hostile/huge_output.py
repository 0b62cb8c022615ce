"""Hostile fixture: floods stdout."""

import torch.nn.functional as F

NAME = "huge_output"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    for _ in range(200):
        print("x" * 1_000_000)
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
