"""AOT (alignment via optimal transport), paired form.

Melnyk et al., "Distributional Preference Alignment of LLMs via Optimal Transport", arXiv 2406.05882, Sec. 3:
the paired AOT loss asks the distribution of the policy's chosen-over-rejected log-prob gaps to dominate the
reference's (first-order stochastic dominance). For one-dimensional distributions the optimal transport plan
matches sorted samples, so with a_(k) the k-th smallest policy gap log pi(y_w) - log pi(y_l) over the batch and
b_(k) the k-th smallest reference gap,

    L_k = -log sigmoid(beta * (a_(k) - b_(k))),   k = 1 .. B

Same as TRL's ``loss_type="aot"`` (label_smoothing 0, TRL's default). Entry k of the returned tensor is the loss
of the k-th quantile, not of pair k: the loss couples the pairs of a batch (sorting is a batch statistic), so
gradient accumulation and data parallelism change it, and a batch of one pair is plain DPO. Where the policy's
drift does not reorder the batch's gaps (small log-ratios against reference gaps spread over many nats, as at
the start of training), the sorting pairs each sample with its own reference and the batch's loss is DPO's.
Summed log-probs.
"""

import torch
import torch.nn.functional as F

NAME = "aot"
DESCRIPTION = "Logistic loss between sorted policy and sorted reference log-prob gaps: distributional dominance."
ORIGIN = "arXiv:2406.05882"
PARENTS = ["dpo"]


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    policy_gaps = torch.sort(policy_chosen_logps - policy_rejected_logps, dim=0).values  # (B,) ascending
    reference_gaps = torch.sort(reference_chosen_logps - reference_rejected_logps, dim=0).values  # (B,)
    return -F.logsigmoid(beta * (policy_gaps - reference_gaps))
