"""ORPO: odds-ratio preference optimization, reference-free and monolithic (SFT plus preference in one loss).

Hong, Lee and Thorne, "ORPO: Monolithic Preference Optimization without Reference Model", arXiv 2403.07691,
Eq. 6 with Eq. 7: with the length-normalized likelihood P(y|x) = exp(avg log-prob per token) and its odds
odds(y) = P / (1 - P),

    L = -(1 / |y_w|) log pi(y_w|x) - lambda * log sigmoid(log odds(y_w) - log odds(y_l)),
    log odds(y) = avg - log(1 - exp(avg)),  avg = log pi(y|x) / |y|

The contract's ``beta`` is lambda, as in TRL's ``trl.experimental.orpo.ORPOTrainer`` (``ORPOConfig.beta``,
default 0.1, the paper's lambda); the reference log-probs are ignored. log(1 - exp(avg)) is computed stably as
TRL does (log1p(-exp(x)) below -ln 2, log(-expm1(x)) above), each branch on a clamped input so the branch
torch.where discards cannot put inf or NaN into the gradient.

Departures from TRL: (1) TRL's NLL term is a token mean over the whole batch, and for ORPO it also counts the
prompt tokens; the contract has per-pair completion log-probs only, so the SFT term here is each chosen
completion's own mean NLL, -log pi(y_w|x) / |y_w| (Eq. 2 per pair, so the loss does not couple the pairs of a
batch). The two agree for a batch of one pair whose prompt is one token (nothing of the prompt is scored). The
odds-ratio term equals TRL's. (2) Token counts are clamped to at least 1, and the average log-prob to at most
AVG_LOGP_MAX = -1e-6: a completion truncated to 0 tokens (summed log-prob 0), or one the model is certain of,
would otherwise have odds 1 / 0.
"""

import math

import torch
import torch.nn.functional as F

NAME = "orpo"
DESCRIPTION = "Chosen NLL plus lambda = beta times a logistic loss on the log odds ratio of chosen over rejected."
ORIGIN = "arXiv:2403.07691"
PARENTS = []

AVG_LOGP_MAX = -1e-6  # keeps log(1 - exp(avg)) finite when avg reaches 0


def _log_odds(average_logps):
    """log(p / (1 - p)) for p = exp(average_logps), average_logps <= AVG_LOGP_MAX < 0."""
    far = average_logps.clamp(max=-math.log(2.0))  # the log1p branch, exp(far) <= 1/2
    near = average_logps.clamp(min=-math.log(2.0))  # the expm1 branch, -expm1(near) >= 1e-6
    log_one_minus_p = torch.where(
        average_logps < -math.log(2.0), torch.log1p(-torch.exp(far)), torch.log(-torch.expm1(near))
    )
    return average_logps - log_one_minus_p


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
    chosen_log_odds = _log_odds(chosen_average.clamp(max=AVG_LOGP_MAX))  # (B,)
    rejected_log_odds = _log_odds(rejected_average.clamp(max=AVG_LOGP_MAX))  # (B,)
    odds_ratio_losses = -F.logsigmoid(chosen_log_odds - rejected_log_odds)  # (B,) Eq. 7
    return -chosen_average + beta * odds_ratio_losses
