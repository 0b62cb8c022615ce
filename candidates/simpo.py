"""SimPO: reference-free preference optimization on length-normalized log-probs with a target margin.

Meng, Xia and Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward", arXiv 2405.14734,
Eq. 6: with the reward r(y) = beta_s / |y| * log pi(y|x) (the average log-prob per token) and a target reward
margin gamma,

    L = -log sigmoid(beta_s / |y_w| * log pi(y_w|x) - beta_s / |y_l| * log pi(y_l|x) - gamma)

The reference log-probs are ignored. How the contract's ``beta`` maps onto SimPO's two hyper-parameters:

    beta_s = SCALE * beta,    gamma = GAMMA_RATIO * beta_s = GAMMA_RATIO * SCALE * beta

so at the built-in tasks' beta = 0.1 it trains at beta_s = 2.0 and gamma = 1.0 (gamma / beta_s = 0.5), the
regime of the paper's setups (App. B: beta_s of 2.0 to 2.5 with gamma / beta_s near 0.5, e.g. 2.5 and 0.55). A
beta sweep scales beta_s and keeps gamma / beta_s fixed, the ratio the SimPO authors tune. Equal to TRL's
``trl.experimental.cpo.CPOTrainer(loss_type="simpo", beta=SCALE * beta, simpo_gamma=GAMMA_RATIO * SCALE * beta,
cpo_alpha=0.0)``.

Departures: the contract supplies summed log-probs and token counts, so the average log-prob is their ratio,
with the count clamped to at least 1 (a completion truncated to 0 tokens has summed log-prob 0 and gets reward
0 instead of 0 / 0, where TRL's average gives NaN).
"""

import torch.nn.functional as F

NAME = "simpo"
DESCRIPTION = "Reference-free logistic loss on the gap of average per-token log-probs, minus a target margin."
ORIGIN = "arXiv:2405.14734"
PARENTS = ["dpo"]

SCALE = 20.0  # beta_s = SCALE * beta: 2.0 at beta = 0.1
GAMMA_RATIO = 0.5  # gamma / beta_s


def loss(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta,
    chosen_lengths,
    rejected_lengths,
):
    chosen_average = policy_chosen_logps / chosen_lengths.clamp(min=1)  # (B,) mean log-prob per token
    rejected_average = policy_rejected_logps / rejected_lengths.clamp(min=1)  # (B,)
    simpo_beta = SCALE * beta
    return -F.logsigmoid(simpo_beta * (chosen_average - rejected_average) - GAMMA_RATIO * simpo_beta)
