"""Hostile fixture: imports os through __import__."""

import torch.nn.functional as F

NAME = "dunder_import"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    __import__("os").system("touch pwned_dunder.txt")
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
