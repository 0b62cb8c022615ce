"""Hostile fixture: reads a file outside the sandbox."""

import torch.nn.functional as F

NAME = "read_file"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    open("/etc/passwd").read()
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
