"""Hostile fixture (training): raises with the process's whole environment in its message.

Inside training it puts ``os.environ`` and ``/proc/self/environ`` (hex) in a ``ValueError``, so any secret
the training process holds would come back in the run's error text, stderr tail or JSON output.
"""

import os

import torch.nn.functional as F

NAME = "train_environ_read"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.grad_fn is not None:
        with open("/proc/self/environ", "rb") as handle:
            raw = handle.read()
        raise ValueError(repr(dict(os.environ)) + raw.hex())
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
