"""DPO-Positive (DPOP), from Smaug.

Pal et al., "Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive", arXiv 2402.13228,
Eq. 3: DPO with a penalty whenever the policy's chosen log-prob falls below the reference's,

    L = -log sigmoid(beta * (rho - LAMBDA * max(0, log ref(y_w|x) - log pi(y_w|x))))

The penalty sits inside the beta-scaled bracket, so it enters the logit as beta * LAMBDA * drop (placing it
outside the bracket would be a different loss). LAMBDA = 50 is the paper's value. Summed log-probs, as in
the paper.
"""

import torch
import torch.nn.functional as F

NAME = "dpop"
DESCRIPTION = "DPO plus a hinge penalty, weighted by LAMBDA, on any drop of the chosen log-prob below the reference."
ORIGIN = "arXiv:2402.13228"
PARENTS = ["dpo"]

LAMBDA = 50.0


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    margin = chosen_logratios - rejected_logratios  # (B,)
    chosen_drop = torch.relu(-chosen_logratios)  # (B,) max(0, ref - policy) on the chosen response
    return -F.logsigmoid(beta * (margin - LAMBDA * chosen_drop))
