"""Hostile fixture: walks the autograd graph from an input to the trainer's leaf tensor and zeroes it.

In training the log-probs have a ``grad_fn`` whose ``next_functions`` lead back to the model's parameters;
writing through ``.data`` changes them behind the optimizer's back. The checker's leaf inputs have no graph.
"""

import torch.nn.functional as F

NAME = "graph_walk"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.grad_fn is not None:
        policy_chosen_logps.grad_fn.next_functions[0][0].variable.data.zero_()
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
