"""Policy Focused Loss (PFL), a DiscoPOP discovery.

Lu et al., arXiv 2406.08414 (discovered objectives, Appendix), in the version the DiscoPOP code ships
(``policy_focused_loss`` in luchris429/DiscoPOP, src/alignment/gpo.py), with x = beta * rho:

    L = -log sigmoid(x) / FOCUS_SCALE          where pi(y_w|x) > pi(y_l|x)   ("correct")
    L = FOCUS_SCALE * max(0, 1 - x)            otherwise

Note, as shipped: "correct" compares the policy's raw log-probs of chosen and rejected, not the margin rho,
so the branch depends on the responses' lengths and not on the reference. FOCUS_SCALE = 2 as in that code.
"""

import torch
import torch.nn.functional as F

NAME = "pfl"
DESCRIPTION = "Halved logistic loss where the policy already prefers the chosen response, doubled hinge elsewhere."
ORIGIN = "arXiv:2406.08414"
PARENTS = ["dpo", "hinge"]

FOCUS_SCALE = 2.0


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    is_correct = policy_chosen_logps > policy_rejected_logps  # (B,) bool
    logistic_losses = -F.logsigmoid(logits)  # (B,)
    hinge_losses = torch.relu(1 - logits)  # (B,)
    return torch.where(is_correct, logistic_losses / FOCUS_SCALE, hinge_losses * FOCUS_SCALE)
