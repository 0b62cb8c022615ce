"""Adaptive Quantile Feedback Loss (AQFL), a DiscoPOP discovery.

Lu et al., arXiv 2406.08414 (discovered objectives, Appendix), in the version the DiscoPOP code ships
(``adaptive_quantile_feedback_loss`` in luchris429/DiscoPOP, src/alignment/gpo.py), with z = beta * rho / TAU:

    q0 = std_batch(z) * mean_batch(sigmoid(-z))
    q  = q0 + QUANTILE_UPDATE_RATE * (sigmoid(mean_batch(z)) - q0)
    w  = sigmoid(DISTANCE_SCALE * |z - q|)
    L  = w * (-log sigmoid(beta * rho)) + (1 - w) * max(0, 1 - beta * rho)

Pairs far from the adaptive quantile lean on the logistic loss, pairs near it on the hinge. Hyper-parameters
as in that code (TAU is its hard-coded 0.05 temperature). Departure: for a batch of one the unbiased
standard deviation is 0/0 = NaN in that code; here it is taken as 0. Batch statistics couple the examples.
"""

import torch
import torch.nn.functional as F

NAME = "aqfl"
DESCRIPTION = "Logistic/hinge blend weighted by each margin's distance from a batch-adaptive quantile."
ORIGIN = "arXiv:2406.08414"
PARENTS = ["dpo", "hinge"]

QUANTILE_UPDATE_RATE = 0.05
DISTANCE_SCALE = 0.1
TAU = 0.05


def _batch_std(values):
    """Unbiased standard deviation over the batch; 0 (not NaN) for a batch of one."""
    if values.numel() < 2:
        return torch.zeros((), dtype=values.dtype, device=values.device)
    return values.std()


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    scaled_logits = logits / TAU  # (B,)
    base_quantile = _batch_std(scaled_logits) * torch.sigmoid(-scaled_logits).mean()  # ()
    adaptive_quantile = base_quantile + QUANTILE_UPDATE_RATE * (
        torch.sigmoid(scaled_logits.mean()) - base_quantile
    )  # ()
    blend_rate = torch.sigmoid(DISTANCE_SCALE * (scaled_logits - adaptive_quantile).abs())  # (B,)
    logistic_losses = -F.logsigmoid(logits)  # (B,)
    hinge_losses = torch.relu(1 - logits)  # (B,)
    return blend_rate * logistic_losses + (1 - blend_rate) * hinge_losses
