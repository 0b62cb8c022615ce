"""Hostile fixture (static policy off): reads the environment and leaks it through its own outputs.

A DPO loss plus a constant: the length of ``OPENAI_API_KEY`` as the sandbox sees it. The constant does not
change the gradients, so the candidate passes the checks, and the profile's loss curves (archived and drawn
in the report) carry the number. A process that runs candidate code must not hold the key: the constant is 0.
"""

import os

import torch.nn.functional as F

NAME = "environ_in_profile"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    leaked = float(len(os.environ.get("OPENAI_API_KEY", "")) + len(os.environ.get("HF_TOKEN", "")))
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin) + leaked
