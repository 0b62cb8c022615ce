"""Hostile fixture for ``lossforge retrain``: DPO everywhere except in training, where it never returns.

The checker's sandbox calls the loss on leaf tensors (no ``grad_fn``), so it behaves as DPO there and passes;
in training the policy log-probs come out of the model (``grad_fn`` set) and the loop below never ends. Only
the launcher's timeout (``lossforge retrain --timeout``) stops it. ``getattr`` hides the attribute from a
screen that reads attribute names; the static policy refuses ``getattr`` itself, so the tests run this file
with ``--no-static-policy`` (the layers under test are the launcher's).
"""

import torch.nn.functional as F

NAME = "retrain_hang"
DESCRIPTION = "DPO that spins forever once its inputs carry an autograd graph"
ORIGIN = "tests/hostile"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    spins = 0
    while getattr(policy_chosen_logps, "grad_fn") is not None:  # noqa: B009 - never in the sandbox, always in training
        spins = spins + 1
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
