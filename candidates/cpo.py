"""CPO: contrastive preference optimization, reference-free, with a behaviour-cloning NLL term.

Xu et al., "Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine
Translation", arXiv 2401.08417, Sec. 3: the preference term of Eq. 3 (DPO with the reference dropped) plus the
NLL regularizer on the chosen completion, L_CPO = L_prefer + L_NLL:

    L = -log sigmoid(beta * (log pi(y_w|x) - log pi(y_l|x))) + ALPHA * (-(1 / |y_w|) log pi(y_w|x))

As TRL's ``trl.experimental.cpo.CPOTrainer(loss_type="sigmoid", cpo_alpha=ALPHA)``: the preference term uses the
summed completion log-probs (TRL averages them only for its "ipo" and "simpo" variants), beta is TRL's beta, the
reference log-probs are ignored, and ALPHA = 1.0 is TRL's default ``cpo_alpha`` and the paper's unit weight.

Departure from TRL: TRL's NLL is PyTorch's cross-entropy over the batch, a token mean over all chosen tokens of
the batch (the paper writes -E log pi(y_w|x)); here it is each chosen completion's own mean NLL, so the loss
does not couple the pairs of a batch. The two agree for a batch of one pair and for batches whose chosen
completions have equal lengths; otherwise TRL weights each pair's NLL by its share of the batch's tokens.
Token counts are clamped to at least 1 (a completion truncated to 0 tokens has no NLL to learn from).
"""

import torch.nn.functional as F

NAME = "cpo"
DESCRIPTION = "Reference-free logistic loss on the summed log-prob gap, plus ALPHA times the chosen per-token NLL."
ORIGIN = "arXiv:2401.08417"
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
    preference_losses = -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps))  # (B,) Eq. 3
    chosen_nll = -policy_chosen_logps / chosen_lengths.clamp(min=1)  # (B,) mean NLL per chosen token
    return preference_losses + ALPHA * chosen_nll
