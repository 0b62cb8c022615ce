"""Length-normalized DPO: DPO on per-token (length-averaged) log-ratios.

Lambert et al., "Tulu 3: Pushing Frontiers in Open Language Model Post-Training", arXiv 2411.15124, the
length-normalized DPO of its preference-tuning stage (DPO, arXiv 2305.18290 Eq. 7, with each log-ratio divided
by its completion's length):

    L = -log sigmoid(beta_ln * rho_ln),
    rho_ln = (log pi(y_w|x) - log ref(y_w|x)) / |y_w| - (log pi(y_l|x) - log ref(y_l|x)) / |y_l|

How the contract's ``beta`` maps onto beta_ln: beta_ln = SCALE * beta. A per-token log-ratio is about 1/|y| of
a summed one, so the DPO beta of summed log-probs would leave almost no gradient here; Tulu 3 trains this loss
at beta_ln = 5, which SCALE = 50 reproduces at the built-in tasks' beta = 0.1. Equal to TRL's
``DPOConfig(loss_type="sigmoid_norm", beta=SCALE * beta)``. Token counts are clamped to at least 1 (TRL clamps
the same way), so a completion truncated to 0 tokens contributes a log-ratio of 0.
"""

import torch.nn.functional as F

NAME = "ln_dpo"
DESCRIPTION = "DPO on the difference of per-token log-ratios, so a completion's length does not scale its reward."
ORIGIN = "arXiv:2411.15124"
PARENTS = ["dpo"]

SCALE = 50.0  # beta_ln = SCALE * beta: 5 at beta = 0.1


def loss(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta,
    chosen_lengths,
    rejected_lengths,
):
    chosen_logratios = (policy_chosen_logps - reference_chosen_logps) / chosen_lengths.clamp(min=1)  # (B,)
    rejected_logratios = (policy_rejected_logps - reference_rejected_logps) / rejected_lengths.clamp(min=1)  # (B,)
    return -F.logsigmoid(SCALE * beta * (chosen_logratios - rejected_logratios))
