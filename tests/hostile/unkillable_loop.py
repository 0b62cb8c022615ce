"""Hostile fixture: swallows every interruption, so only the wall-clock kill stops it."""

import torch.nn.functional as F

NAME = "unkillable_loop"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    while 1 + 1 == 2:
        try:
            while 1 + 1 == 2:
                pass
        except BaseException:
            pass
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
