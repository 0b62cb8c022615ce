"""Noise Contrastive Alignment (NCA), pairwise form.

Chen et al., "Noise Contrastive Alignment of Language Models with Explicit Rewards", arXiv 2402.05369, NCA
loss specialised to K = 2 responses, with implicit rewards r = beta * log-ratio:

    L = -log sigmoid(r_w) - 0.5 * log sigmoid(-r_w) - 0.5 * log sigmoid(-r_l)

Unlike DPO it acts on each response's own log-ratio, not only on their difference, so it pushes the chosen
likelihood up in absolute terms. Same as TRL's ``loss_type="nca_pair"``.
"""

import torch.nn.functional as F

NAME = "nca_pair"
DESCRIPTION = "Noise-contrastive loss on each response's implicit reward: raise r_w, push both below 0 softly."
ORIGIN = "arXiv:2402.05369"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)  # (B,)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)  # (B,)
    return -F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)
