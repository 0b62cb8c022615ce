"""Self-Play Preference Optimization (SPPO), hard-label form.

Wu et al., "Self-Play Preference Optimization for Language Model Alignment", arXiv 2405.00675, Eq. 4.7 of
Algorithm 1 with the win probability set to 1 for the chosen and 0 for the rejected response, which makes
the targets +1/(2 beta) and -1/(2 beta) for the two log-ratios:

    L = (log-ratio_w - 0.5 / beta) ** 2 + (log-ratio_l + 0.5 / beta) ** 2

Departure from the paper: the soft probabilities estimated with a preference model (PairRM) are replaced by
hard labels, as in TRL's ``loss_type="sppo_hard"``, which this file equals.
"""

NAME = "sppo_hard"
DESCRIPTION = "Squared regression of each log-ratio onto +-1/(2 beta): chosen up, rejected down, independently."
ORIGIN = "arXiv:2405.00675"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    chosen_errors = (chosen_logratios - 0.5 / beta) ** 2  # (B,)
    rejected_errors = (rejected_logratios + 0.5 / beta) ** 2  # (B,)
    return chosen_errors + rejected_errors
