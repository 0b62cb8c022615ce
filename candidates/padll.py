"""Performance Adaptive Decay Logistic Loss (PADLL), a DiscoPOP discovery.

Lu et al., arXiv 2406.08414 (discovered objectives, Appendix), in the version the DiscoPOP code ships
(``performance_adaptive_decay_logistic_loss`` in luchris429/DiscoPOP, src/alignment/gpo.py): DPO's logistic
loss scaled by BASE_DECAY, and by a further (1 - MISMATCH_PENALTY) on pairs whose margin rho is negative:

    L = BASE_DECAY * (1 - MISMATCH_PENALTY * [rho < 0]) * (-log sigmoid(beta * rho))

The mismatch indicator has no gradient; it only re-weights. Hyper-parameters as in that code.
"""

import torch.nn.functional as F

NAME = "padll"
DESCRIPTION = "DPO down-weighted on mis-ordered pairs (rho < 0), so confident mistakes pull less."
ORIGIN = "arXiv:2406.08414"
PARENTS = ["dpo"]

BASE_DECAY = 0.9
MISMATCH_PENALTY = 0.5


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    margin = chosen_logratios - rejected_logratios  # (B,)
    mismatches = (margin < 0).to(margin.dtype)  # (B,) 1 where the pair is mis-ordered
    decay = BASE_DECAY * (1 - MISMATCH_PENALTY * mismatches)  # (B,)
    return decay * -F.logsigmoid(beta * margin)
