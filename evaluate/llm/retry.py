"""How often and how patiently a chat call is retried (``tenacity`` does the retrying, in ``client``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` requests per call at most; waits ``initial_wait_s * 2**k`` capped at ``max_wait_s``,
    or the server's ``Retry-After`` (capped at ``max_retry_after_s``) when it sends one."""

    max_attempts: int = 5
    initial_wait_s: float = 1.0
    max_wait_s: float = 60.0
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_wait_s < 0 or self.max_wait_s < 0 or self.max_retry_after_s < 0:
            raise ValueError(
                f"waits must be >= 0, got initial_wait_s={self.initial_wait_s}, max_wait_s={self.max_wait_s}, "
                f"max_retry_after_s={self.max_retry_after_s}"
            )


__all__ = ["RetryPolicy"]
