"""Hostile fixture: changes torch's process-wide state and draws random numbers.

Clearing a mutable module-level container of F breaks every later ``F.grid_sample`` of the process, the
autocast nesting counter leaks into the trainer's autocast, and random noise makes the loss nondeterministic.
"""

import torch
import torch.nn.functional as F

NAME = "global_state"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    F.GRID_SAMPLE_INTERPOLATION_MODES.clear()
    torch.autocast_increment_nesting()
    noise = torch.rand(policy_chosen_logps.shape)
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return noise - F.logsigmoid(beta * margin)
