"""Robust (provably robust / conservative) DPO with label-flip rate epsilon.

Chowdhury et al., "Provably Robust DPO: Aligning Language Models with Noisy Feedback", arXiv 2403.00409,
the de-biased loss of Sec. 3: with l(rho) = -log sigmoid(beta * rho) and flip probability epsilon,

    L = ((1 - epsilon) * l(rho) - epsilon * l(-rho)) / (1 - 2 * epsilon)

Same as TRL's ``loss_type="robust"`` with ``label_smoothing=EPSILON``. EPSILON = 0.1 is the flip rate the
paper and TRL suggest; at epsilon = 0 this would be plain DPO, which ``dpo.py`` already is.
"""

import torch.nn.functional as F

NAME = "robust_dpo"
DESCRIPTION = "DPO de-biased for preference labels flipped with probability EPSILON (rDPO)."
ORIGIN = "arXiv:2403.00409"
PARENTS = ["dpo"]

EPSILON = 0.1


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    clean_losses = -(1 - EPSILON) * F.logsigmoid(logits)  # (B,)
    flipped_losses = -EPSILON * F.logsigmoid(-logits)  # (B,)
    return (clean_losses - flipped_losses) / (1 - 2 * EPSILON)
