"""SLiC hinge loss on the beta-scaled log-ratio margin.

Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", arXiv 2305.10425, rank
calibration loss (Sec. 2): L = max(0, delta - log pi(y_w|x) + log pi(y_l|x)).

Departure from the paper, shared with TRL's ``loss_type="hinge"``: the margin is taken on log-ratios to the
reference (as in DPO, arXiv 2305.18290 Eq. 7) and scaled by beta with delta = 1, i.e. relu(1 - beta * rho);
the paper's separate regularizer term is dropped (the reference log-ratio plays that role). Summed log-probs.
"""

import torch

NAME = "hinge"
DESCRIPTION = "Hinge on the beta-scaled log-ratio margin: zero loss once beta * rho exceeds 1."
ORIGIN = "arXiv:2305.10425"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    margin = chosen_logratios - rejected_logratios  # (B,)
    return torch.relu(1 - beta * margin)
