"""EXO (efficient exact optimization), pairwise form.

Ji et al., "Towards Efficient Exact Optimization of Language Model Alignment", arXiv 2402.00856, Eq. 16 with
K = 2: the reverse KL between the policy's softmax over {chosen, rejected} with logits beta * log-ratio,
q = (sigmoid(beta * rho), sigmoid(-beta * rho)), and the label-smoothed target (1 - EPSILON, EPSILON):

    L = q_w * (log q_w - log(1 - EPSILON)) + q_l * (log q_l - log EPSILON)

Same as TRL's ``loss_type="exo_pair"`` with ``label_smoothing=EPSILON``; EPSILON = 1e-3 is the paper's value
(epsilon = 0 makes log EPSILON infinite, which is why it must be positive).
"""

import math

import torch
import torch.nn.functional as F

NAME = "exo_pair"
DESCRIPTION = "Reverse KL from the policy's pairwise preference distribution to a (1 - EPSILON) smoothed label."
ORIGIN = "arXiv:2402.00856"
PARENTS = []

EPSILON = 1e-3


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    chosen_prob = torch.sigmoid(logits)  # (B,)
    rejected_prob = torch.sigmoid(-logits)  # (B,)
    chosen_term = chosen_prob * (F.logsigmoid(logits) - math.log1p(-EPSILON))  # (B,)
    rejected_term = rejected_prob * (F.logsigmoid(-logits) - math.log(EPSILON))  # (B,)
    return chosen_term + rejected_term
