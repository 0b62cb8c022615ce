"""Hostile fixture (training): overwrites the trainable (LoRA) parameters through the autograd graph.

Inside training it walks ``grad_fn.next_functions`` down to the ``AccumulateGrad`` nodes and, under
``torch.no_grad()``, fills each parameter they hold (``.variable``) with a constant. Whatever adapter that
leaves is what gets scored: honestly, or the run fails.
"""

import torch
import torch.nn.functional as F

NAME = "train_parameter_write"


def _leaves(node, seen):
    stack = [node]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        variable = getattr(current, "variable", None)
        if variable is not None:
            yield variable
        stack.extend(child for child, _ in current.next_functions)


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.grad_fn is not None:
        with torch.no_grad():
            for parameter in _leaves(policy_chosen_logps.grad_fn, set()):
                parameter.data.fill_(0.05)
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
