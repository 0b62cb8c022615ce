"""Identity Preference Optimization (IPO).

Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences",
arXiv 2310.12036, Eq. 17 (empirical IPO loss), with the regularization parameter tau taken as ``beta``:

    L = (rho - 1 / (2 * beta)) ** 2,  rho = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))

Departure from TRL's ``loss_type="ipo"``: this uses log-probabilities summed over completion tokens, as the
contract supplies them and as Eq. 17 is written; TRL divides each log-ratio by its completion length first.
The two agree only for one-token completions, so this file is tested against Eq. 17, not against TRL.
"""

NAME = "ipo"
DESCRIPTION = "Squared regression of the log-ratio margin onto the target 1 / (2 * beta)."
ORIGIN = "arXiv:2310.12036"
PARENTS = []


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    margin = chosen_logratios - rejected_logratios  # (B,)
    return (margin - 1 / (2 * beta)) ** 2
