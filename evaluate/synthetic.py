"""Synthetic log-probabilities of realistic magnitude for the sandboxed checks.

Real DPO batches hold *summed* completion log-probs: tens to hundreds of tokens at roughly -0.3 to -2 nats
each, so values from about -20 to -600 nats, while the policy starts equal to the reference and drifts by a
few nats at most during training. A loss that only works on inputs near 0, or that cannot tell a 0.5-nat
log-ratio apart at -300 nats, must fail here rather than during a training run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_TOKENS, MAX_TOKENS = 20, 300
MIN_NATS_PER_TOKEN, MAX_NATS_PER_TOKEN = 0.3, 2.0
LOG_RATIO_STD = 1.5  # nats: typical policy/reference drift of a summed log-prob in early training


@dataclass(frozen=True)
class SyntheticBatch:
    """The four contract inputs, each (B,), in the order ``loss`` takes them."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.policy_chosen, self.policy_rejected, self.reference_chosen, self.reference_rejected)

    @property
    def size(self) -> int:
        return int(self.policy_chosen.shape[0])

    def at_initialization(self) -> SyntheticBatch:
        """Policy equal to the reference (rho = 0), as at the first training step."""
        return SyntheticBatch(
            self.reference_chosen.clone(),
            self.reference_rejected.clone(),
            self.reference_chosen,
            self.reference_rejected,
        )

    def leaves(self, dtype: torch.dtype) -> SyntheticBatch:
        """Fresh leaf tensors in ``dtype``; the policy inputs require grad, the reference inputs do not."""
        policy = [t.detach().to(dtype).clone().requires_grad_(True) for t in self.tensors()[:2]]
        reference = [t.detach().to(dtype).clone() for t in self.tensors()[2:]]
        return SyntheticBatch(*policy, *reference)


def _summed_logps(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    tokens = torch.randint(MIN_TOKENS, MAX_TOKENS + 1, (batch_size,), generator=generator).double()  # (B,)
    span = MAX_NATS_PER_TOKEN - MIN_NATS_PER_TOKEN
    nats_per_token = MIN_NATS_PER_TOKEN + span * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    return -tokens * nats_per_token  # (B,)


def synthetic_batch(batch_size: int, *, seed: int = 0) -> SyntheticBatch:
    """A deterministic float64 batch: reference log-probs in the hundreds of nats, policy a few nats away."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(1_000_003 * seed + batch_size)
    reference_chosen = _summed_logps(batch_size, generator)  # (B,)
    reference_rejected = _summed_logps(batch_size, generator)  # (B,)
    drift = LOG_RATIO_STD * torch.randn(2, batch_size, generator=generator, dtype=torch.float64)  # (2, B)
    return SyntheticBatch(
        reference_chosen + drift[0], reference_rejected + drift[1], reference_chosen, reference_rejected
    )


__all__ = ["SyntheticBatch", "synthetic_batch"]
