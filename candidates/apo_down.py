"""Anchored Preference Optimization, APO-down variant.

D'Oosterlinck et al., "Anchored Preference Optimization and Contrastive Revisions", arXiv 2408.06266, Eq. 8:

    L = sigmoid(beta * log-ratio_w) + (1 - sigmoid(beta * (log-ratio_w - log-ratio_l)))

For data whose chosen answers are worse than the model's own: lowers the chosen likelihood and the rejected
one more. Same as TRL's ``loss_type="apo_down"``.
"""

import torch

NAME = "apo_down"
DESCRIPTION = "Anchored loss: lower the chosen log-ratio, while keeping the chosen-over-rejected margin positive."
ORIGIN = "arXiv:2408.06266"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    chosen_losses = torch.sigmoid(beta * chosen_logratios)  # (B,)
    margin_losses = 1 - torch.sigmoid(beta * (chosen_logratios - rejected_logratios))  # (B,)
    return chosen_losses + margin_losses
