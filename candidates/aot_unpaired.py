"""AOT (alignment via optimal transport), unpaired form.

Melnyk et al., "Distributional Preference Alignment of LLMs via Optimal Transport", arXiv 2406.05882, Sec. 3:
the unpaired AOT loss asks the distribution of chosen log-ratios to dominate the distribution of rejected
log-ratios, without using which chosen completion was paired with which rejected one. One-dimensional optimal
transport matches sorted samples, so with u_(k) the k-th smallest chosen log-ratio
log pi(y_w) - log ref(y_w) over the batch and v_(k) the k-th smallest rejected log-ratio,

    L_k = -log sigmoid(beta * (u_(k) - v_(k))),   k = 1 .. B

Same as TRL's ``loss_type="aot_unpaired"`` (label_smoothing 0, TRL's default). Entry k of the returned tensor is
the loss of the k-th quantile, not of pair k: the loss couples the pairs of a batch, so gradient accumulation
and data parallelism change it, and a batch of one pair is plain DPO. Summed log-probs.
"""

import torch
import torch.nn.functional as F

NAME = "aot_unpaired"
DESCRIPTION = "Logistic loss between sorted chosen and sorted rejected log-ratios: dominance without the pairing."
ORIGIN = "arXiv:2406.05882"
PARENTS = ["dpo"]


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = torch.sort(policy_chosen_logps - reference_chosen_logps, dim=0).values  # (B,) ascending
    rejected_logratios = torch.sort(policy_rejected_logps - reference_rejected_logps, dim=0).values  # (B,)
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
