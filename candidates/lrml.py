"""Log-Ratio Modulated Loss (LRML), a.k.a. DiscoPOP.

Lu et al., "Discovering Preference Optimization Algorithms with and for Large Language Models",
arXiv 2406.08414, Eq. 5 (TRL's ``loss_type="discopop"``, ``discopop_tau=0.05``): with x = beta * rho and
the mixing weight s = sigmoid(x / TAU),

    L = (1 - s) * (-log sigmoid(x)) + s * exp(-x)

Departure, numerical only: as published, exp(-x) overflows to inf while s underflows to 0 at large negative
x (from about x < -88 in float32), and inf * 0 gives NaN. Here s * exp(-x) is computed as
exp(-x + log sigmoid(x / TAU)), whose exponent tends to -inf at both ends because TAU < 1, and 1 - s as
sigmoid(-x / TAU). The value equals the published formula wherever that is finite (up to rounding); loss
and gradient stay finite for any finite x. TAU = 0.05 is the paper's value.
"""

import torch
import torch.nn.functional as F

NAME = "lrml"
DESCRIPTION = "Blend of logistic (DPO) and exponential losses, mixed by sigmoid of the margin over TAU."
ORIGIN = "arXiv:2406.08414"
PARENTS = ["dpo"]

TAU = 0.05


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    logistic_weight = torch.sigmoid(-logits / TAU)  # (B,) 1 - s, without the cancellation of 1 - sigmoid
    logistic_losses = -F.logsigmoid(logits)  # (B,)
    weighted_exp_losses = torch.exp(-logits + F.logsigmoid(logits / TAU))  # (B,) s * exp(-x), never inf * 0
    return logistic_weight * logistic_losses + weighted_exp_losses
