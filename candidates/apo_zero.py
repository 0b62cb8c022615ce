"""Anchored Preference Optimization, APO-zero variant.

D'Oosterlinck et al., "Anchored Preference Optimization and Contrastive Revisions", arXiv 2408.06266, Eq. 7:

    L = (1 - sigmoid(beta * log-ratio_w)) + sigmoid(beta * log-ratio_l)

For data whose chosen answers are better than the model's own: raises the chosen likelihood and lowers the
rejected one, each anchored at the reference. Same as TRL's ``loss_type="apo_zero"``.
"""

import torch

NAME = "apo_zero"
DESCRIPTION = "Anchored loss: push the chosen log-ratio above zero and the rejected one below zero."
ORIGIN = "arXiv:2408.06266"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    chosen_losses = 1 - torch.sigmoid(beta * chosen_logratios)  # (B,)
    rejected_losses = torch.sigmoid(beta * rejected_logratios)  # (B,)
    return chosen_losses + rejected_losses
