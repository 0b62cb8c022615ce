"""Hostile fixture: keeps state between calls, to behave during the checker's few calls and differently later.

A module-level list counts the calls and a mutable default argument remembers them; after a few calls the
loss reverses its sign (it would unlearn the preferences in training).
"""

import torch.nn.functional as F

NAME = "call_counter"
CALLS = [0]


def _calls_so_far(_state=[]):  # noqa: B006 - the mutable default is the attack
    _state.append(1)
    return len(_state)


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    CALLS[0] = CALLS[0] + 1
    sign = 1.0 if _calls_so_far() < 50 else -1.0
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return sign * -F.logsigmoid(beta * margin)
