"""Binary Classifier Optimization (BCO), pairwise form.

Jung et al., "Binary Classifier Optimization for Large Language Model Alignment", arXiv 2404.04656: a
logistic classifier whose logit is the implicit reward r = beta * log-ratio, chosen labelled 1, rejected 0:

    L = -log sigmoid(r_w) - log sigmoid(-r_l)

Departure from the paper: its reward shift delta (a running mean of the rewards, kept across steps) is
omitted, since a candidate is a pure per-batch function; TRL 1.16's ``loss_type="bco_pair"`` omits it too,
and this file equals that.
"""

import torch.nn.functional as F

NAME = "bco_pair"
DESCRIPTION = "Logistic classification of chosen (label 1) and rejected (label 0) by their implicit rewards."
ORIGIN = "arXiv:2404.04656"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)  # (B,)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)  # (B,)
    return -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)
