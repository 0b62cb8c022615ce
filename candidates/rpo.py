"""RPO (Iterative Reasoning Preference Optimization): DPO plus a length-normalized NLL on the chosen completion.

Pang et al., "Iterative Reasoning Preference Optimization", arXiv 2404.19733, Sec. 2, the DPO+NLL training loss
of each iteration:

    L = -log sigmoid(beta * rho) + ALPHA * (-(1 / |y_w|) log pi(y_w|x)),
    rho = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))

ALPHA = 1.0: the paper trains with alpha = 1, where it does not matter which of the two terms carries the
weight; here it weights the NLL, as TRL's former ``rpo_alpha`` did. DPO on summed log-probs, as in the paper.

TRL 1.16 has no ``rpo_alpha``; the same loss is ``DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1.0,
ALPHA])``. Departure from it: TRL's "sft" term is a token mean over all chosen tokens of the batch, here each
chosen completion's own mean NLL, so the loss does not couple the pairs of a batch. The two agree for a batch of
one pair and for batches whose chosen completions have equal lengths; otherwise TRL weights each pair's NLL by
its share of the batch's tokens. The paper normalizes the NLL by the length of the sequence it is taken over;
the contract sees the completion only, so that is the length used here. Token counts are clamped to at least 1.
"""

import torch.nn.functional as F

NAME = "rpo"
DESCRIPTION = "DPO plus ALPHA times the chosen completion's per-token NLL, so the chosen likelihood cannot collapse."
ORIGIN = "arXiv:2404.19733"
PARENTS = ["dpo"]

ALPHA = 1.0


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
    dpo_losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))  # (B,)
    chosen_nll = -policy_chosen_logps / chosen_lengths.clamp(min=1)  # (B,) mean NLL per chosen token
    return dpo_losses + ALPHA * chosen_nll
