"""Hostile fixture: writes a file in the working directory."""

import torch.nn.functional as F

NAME = "write_file"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    open("pwned_write.txt", "w").write("owned")
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
