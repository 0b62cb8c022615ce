"""Hostile fixture: reads credentials from the environment and smuggles them out in an exception message.

Under the static policy a loss cannot even name ``os`` (only ``torch``, ``F`` and ``math`` may be imported), so
this is written as an attacker would with the policy off: tests of the process isolation can run it with
``static_policy=False`` and check that the error text it returns holds no secret. It always raises.
"""

import os

import torch.nn.functional as F

NAME = "environ_read"
MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    leaked = sorted(f"{name}={value}" for name, value in os.environ.items() if any(m in name.upper() for m in MARKERS))
    raise RuntimeError(f"environment leak ({len(leaked)} variables): " + "; ".join(leaked))
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
