"""Synthetic log-probabilities of realistic magnitude for the sandboxed checks.

Real DPO batches hold *summed* completion log-probs: tens to hundreds of tokens at roughly -0.3 to -2 nats
each, so values from about -20 to -600 nats, while the policy starts equal to the reference and drifts by a
few nats at most during training. A loss that only works on inputs near 0, or that cannot tell a 0.5-nat
log-ratio apart at -300 nats, must fail here rather than during a training run.
"""

from __future__ import annotations

import torch
from lossforge.evaluate.contract import LogpBatch

MIN_TOKENS, MAX_TOKENS = 20, 300
MIN_NATS_PER_TOKEN, MAX_NATS_PER_TOKEN = 0.3, 2.0
LOG_RATIO_STD = 1.5  # nats: typical policy/reference drift of a summed log-prob in early training


def _summed_logps(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs (B,) and the token counts (B,) they were summed over."""
    tokens = torch.randint(MIN_TOKENS, MAX_TOKENS + 1, (batch_size,), generator=generator).double()  # (B,)
    span = MAX_NATS_PER_TOKEN - MIN_NATS_PER_TOKEN
    nats_per_token = MIN_NATS_PER_TOKEN + span * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    return -tokens * nats_per_token, tokens  # (B,), (B,)


def synthetic_batch(batch_size: int, *, seed: int = 0) -> LogpBatch:
    """A deterministic float64 batch: reference log-probs in the hundreds of nats, policy a few nats away.

    The lengths are the token counts the log-probs were summed over, except at the edges that a length-aware
    loss must survive: with two pairs or more, the first chosen completion has 1 token and the last rejected
    one has 0 (a completion truncated away), so that dividing by a length without a guard fails here; with
    four or more, the second pair's completions have equal lengths.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(1_000_003 * seed + batch_size)
    reference_chosen, chosen_lengths = _summed_logps(batch_size, generator)  # (B,), (B,)
    reference_rejected, rejected_lengths = _summed_logps(batch_size, generator)  # (B,), (B,)
    drift = LOG_RATIO_STD * torch.randn(2, batch_size, generator=generator, dtype=torch.float64)  # (2, B)
    if batch_size >= 2:
        chosen_lengths[0] = 1.0
        rejected_lengths[-1] = 0.0
    if batch_size >= 4:
        rejected_lengths[1] = chosen_lengths[1]  # equal lengths, where a length difference term is zero
    return LogpBatch(
        reference_chosen + drift[0],
        reference_rejected + drift[1],
        reference_chosen,
        reference_rejected,
        chosen_lengths,
        rejected_lengths,
    )


__all__ = ["synthetic_batch"]
