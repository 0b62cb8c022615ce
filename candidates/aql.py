"""Adaptive Quantile Loss (AQL), a DiscoPOP discovery.

Lu et al., arXiv 2406.08414 (discovered objectives, Appendix), in the version the DiscoPOP code ships
(``adaptive_quantile_loss`` in luchris429/DiscoPOP, src/alignment/gpo.py), with x = beta * rho:

    q = PERCENTILE + MOVING_QUANTILE_WEIGHT * (sigmoid(mean_batch(x / TAU)) - PERCENTILE)
    w = sigmoid(-(x / TAU - q))
    L = w * (-log sigmoid(x)) + (1 - w) * max(0, 1 - x)

so pairs below the (batch-adaptive) quantile lean on the logistic loss and pairs above it on the hinge.
Hyper-parameters as in that code (TAU is its hard-coded 0.05 temperature). The batch mean in q couples the
examples of a batch (it matters for gradient accumulation and data parallelism).
"""

import torch
import torch.nn.functional as F

NAME = "aql"
DESCRIPTION = "Per-pair blend of logistic and hinge losses, weighted by the margin's position against a batch quantile."
ORIGIN = "arXiv:2406.08414"
PARENTS = ["dpo", "hinge"]

PERCENTILE = 0.5
MOVING_QUANTILE_WEIGHT = 0.01
TAU = 0.05


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    scaled_logits = logits / TAU  # (B,)
    moving_quantile = PERCENTILE + MOVING_QUANTILE_WEIGHT * (torch.sigmoid(scaled_logits.mean()) - PERCENTILE)  # ()
    quantile_weights = torch.sigmoid(-(scaled_logits - moving_quantile))  # (B,)
    logistic_losses = -F.logsigmoid(logits)  # (B,)
    hinge_losses = torch.relu(1 - logits)  # (B,)
    return quantile_weights * logistic_losses + (1 - quantile_weights) * hinge_losses
