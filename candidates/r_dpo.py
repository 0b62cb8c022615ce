"""R-DPO: DPO with a length-difference regularizer.

Park, Rafailov, Ermon and Finn, "Disentangling Length from Quality in Direct Preference Optimization",
arXiv 2403.19159, the length-regularized DPO objective of Sec. 4: DPO derived from the RLHF objective with a
length penalty alpha * |y| added to the KL-regularized reward maximization, which gives

    L = -log sigmoid(beta * rho + ALPHA * (|y_w| - |y_l|)),
    rho = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))

The sign: the optimal policy of max E[r] - alpha |y| - beta KL implies r(y) = beta log pi / ref + alpha |y|
(+ a prompt-only constant), so the Bradley-Terry logit gains + alpha (|y_w| - |y_l|), as the paper (and SimPO's
table of objectives, arXiv 2405.14734) write it: a pair whose chosen completion is the longer one is already
partly "explained" by length and trains less, a pair whose chosen completion is the shorter one trains more,
which counters DPO's drift to longer outputs. (Written with - alpha, the term would reward verbosity.)

ALPHA = 0.05 per token of length difference is a choice, not a published constant (the paper tunes alpha per
setting, and alpha does not scale with beta): at beta = 0.1 a 10-token difference moves the logit by 0.5, as
much as 5 nats of margin rho do. Summed log-probs, as in the paper. TRL has no R-DPO (its
``ld_alpha`` is LD-DPO, a different, token-level down-weighting), so this file is tested against the formula.
"""

import torch.nn.functional as F

NAME = "r_dpo"
DESCRIPTION = "DPO whose logit is offset by ALPHA times the length difference, so length cannot explain a preference."
ORIGIN = "arXiv:2403.19159"
PARENTS = ["dpo"]

ALPHA = 0.05


def loss(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta,
    chosen_lengths,
    rejected_lengths,
):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    margin = chosen_logratios - rejected_logratios  # (B,)
    length_offset = ALPHA * (chosen_lengths - rejected_lengths)  # (B,) in nats
    return -F.logsigmoid(beta * margin + length_offset)
