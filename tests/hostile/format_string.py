"""Hostile fixture: reads internals through str.format."""

import torch.nn.functional as F

NAME = "format_string"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    f"{policy_chosen_logps.__class__}"
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
