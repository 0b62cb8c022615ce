"""Hostile fixture: reads internals through str.format."""

import torch
import torch.nn.functional as F

NAME = "format_string"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    "{0.__class__}".format(policy_chosen_logps)
    return -F.logsigmoid(beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)))
