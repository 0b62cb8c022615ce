"""Combined Exponential + Logistic Loss (CELL), a DiscoPOP discovery.

Lu et al., arXiv 2406.08414 (discovered objectives, Appendix), in the version the DiscoPOP code ships
(``combined_exp_logistic_loss`` in luchris429/DiscoPOP, src/alignment/gpo.py): a fixed mixture

    L = ALPHA * exp(-beta * rho) + (1 - ALPHA) * (-log sigmoid(beta * rho))

with ALPHA = 0.5 as in that code. Not stabilised: the exponential term is the loss itself, not an
intermediate, so it genuinely overflows (to inf) for beta * rho < about -88 in float32.
"""

import torch
import torch.nn.functional as F

NAME = "cell"
DESCRIPTION = "Equal mixture of the exponential and the logistic (DPO) loss of the beta-scaled margin."
ORIGIN = "arXiv:2406.08414"
PARENTS = ["dpo"]

ALPHA = 0.5


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    exp_losses = torch.exp(-logits)  # (B,)
    logistic_losses = -F.logsigmoid(logits)  # (B,)
    return ALPHA * exp_losses + (1 - ALPHA) * logistic_losses
