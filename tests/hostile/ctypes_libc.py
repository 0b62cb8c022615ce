"""Hostile fixture: calls libc directly through ctypes."""

import ctypes

import torch.nn.functional as F

NAME = "ctypes_libc"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    ctypes.CDLL(None).system(b"touch pwned_ctypes.txt")
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
