"""Direct Preference Optimization, sigmoid loss.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
arXiv 2305.18290, Eq. 7:

    L = -log sigmoid(beta * rho),  rho = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))

Log-probabilities are summed over completion tokens, as in the paper and TRL's ``loss_type="sigmoid"``.
"""

import torch.nn.functional as F

NAME = "dpo"
DESCRIPTION = "Logistic (Bradley-Terry) loss on the beta-scaled log-ratio margin between chosen and rejected."
ORIGIN = "arXiv:2305.18290"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    margin = chosen_logratios - rejected_logratios  # (B,)
    return -F.logsigmoid(beta * margin)
