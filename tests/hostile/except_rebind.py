"""Hostile fixture: ``except ... as torch`` rebinds a module name, so ``torch.<name>`` is no longer torch.

A policy that checks ``torch.<name>`` against torch's functions is then checking the wrong object: here
``torch.obj`` is whatever object the failed attribute lookup was made on.
"""

import torch  # noqa: F401 - imported so that the rebinding shadows it
import torch.nn.functional as F

NAME = "except_rebind"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    try:
        policy_chosen_logps.no_such_attribute  # noqa: B018 - raises AttributeError
    except AttributeError as torch:  # noqa: F811 - the rebinding is the attack
        policy_chosen_logps = torch.obj
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
