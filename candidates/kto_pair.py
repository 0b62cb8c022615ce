"""KTO (Kahneman-Tversky Optimization), paired form.

Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization", arXiv 2402.01306 (the
"HALOs" report; TRL's former ``loss_type="kto_pair"`` cited its Eq. 7), with lambda_D = lambda_U = 1 and
the reference point z_ref estimated from the batch. Each pair contributes its desirable (chosen) term plus
its undesirable (rejected) term, the chosen term using the rejected half's KL estimate and vice versa:

    KL_w = max(0, mean_batch(log-ratio_w)),  KL_l = max(0, mean_batch(log-ratio_l))
    L = (1 - sigmoid(beta * (log-ratio_w - KL_l))) + (1 - sigmoid(beta * (KL_w - log-ratio_l)))

Departures: TRL (< 0.9) and the DiscoPOP code returned the two terms concatenated, shape (2B,); here they
are summed per pair, so the batch mean is twice theirs (same gradient direction). As in that code, the KL
means are not detached (the KTO paper does not back-propagate through z_ref). The KL means couple the
examples of a batch: a pair's loss depends on the other pairs, so gradient accumulation and data
parallelism change the estimate.
"""

import torch

NAME = "kto_pair"
DESCRIPTION = "Prospect-theoretic value of each response's log-ratio relative to a batch KL reference point."
ORIGIN = "arXiv:2402.01306"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    chosen_kl = chosen_logratios.mean().clamp(min=0)  # ()
    rejected_kl = rejected_logratios.mean().clamp(min=0)  # ()
    chosen_losses = 1 - torch.sigmoid(beta * (chosen_logratios - rejected_kl))  # (B,)
    rejected_losses = 1 - torch.sigmoid(beta * (chosen_kl - rejected_logratios))  # (B,)
    return chosen_losses + rejected_losses
