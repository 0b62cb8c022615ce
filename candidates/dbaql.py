"""Dynamic Blended Adaptive Quantile Loss (DBAQL), a DiscoPOP discovery.

Lu et al., arXiv 2406.08414 (discovered objectives, Appendix), in the version the DiscoPOP code ships
(``dynamic_blended_adaptive_quantile_loss`` in luchris429/DiscoPOP, src/alignment/gpo.py), with
x = beta * rho:

    c = DYNAMIC_BLEND_RATE * sigmoid(var_batch(x / TAU))
    L = c * (-log sigmoid(x / TEMPERATURE)) + (1 - c) * exp(-x * TEMPERATURE)

A spread-out batch leans on the logistic loss, a tight one on the exponential loss. Hyper-parameters as in
that code (TAU is its hard-coded 0.05). Departure: for a batch of one the unbiased variance is 0/0 = NaN in
that code; here it is taken as 0. The variance couples the examples of a batch. The exponential term
overflows (to inf) for x < about -98 in float32, as published.
"""

import torch
import torch.nn.functional as F

NAME = "dbaql"
DESCRIPTION = "Logistic/exponential blend whose mixing weight grows with the batch variance of the margins."
ORIGIN = "arXiv:2406.08414"
PARENTS = ["dpo", "cell"]

TEMPERATURE = 0.9
DYNAMIC_BLEND_RATE = 1.0
TAU = 0.05


def _batch_var(values):
    """Unbiased variance over the batch; 0 (not NaN) for a batch of one."""
    if values.numel() < 2:
        return torch.zeros((), dtype=values.dtype, device=values.device)
    return values.var()


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    blend_coeff = torch.sigmoid(_batch_var(logits / TAU)) * DYNAMIC_BLEND_RATE  # ()
    logistic_losses = -F.logsigmoid(logits / TEMPERATURE)  # (B,)
    exp_losses = torch.exp(-logits * TEMPERATURE)  # (B,)
    return blend_coeff * logistic_losses + (1 - blend_coeff) * exp_losses
