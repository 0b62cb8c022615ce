"""Hostile fixture: starts a process that would leave a marker file."""

import subprocess

import torch.nn.functional as F

NAME = "subprocess_spawn"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    subprocess.run(["touch", "pwned_subprocess.txt"], check=True)
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
