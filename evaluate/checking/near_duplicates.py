"""Near-duplicates: two losses whose normalised gradient directions almost coincide train almost alike.

The exact fingerprint (``fingerprint.py``) only merges losses whose unit gradient directions agree to 1e-6
in every component. A proposal that adds ``1e-4 * rho**2`` to DPO changes the digest but not what Adam does
with it in any way a score could tell apart. ``direction_distance`` compares the unit directions the profile
stores (``LossProfile.directions``, one 32-vector per beta of ``FINGERPRINT_BETAS``):

    d(a, b) = max over betas of || u_a(beta) - u_b(beta) ||_2            in [0, 2]

The maximum, not the mean, because training happens at one beta: two losses that differ at one beta only are
different losses (the digest keeps all betas for the same reason). A beta at which both calls failed is
skipped; a beta at which only one failed makes the pair infinitely far apart.

``DEFAULT_THRESHOLD`` is chosen from the measured distances between the 19 library losses
(``library_distances``; docs/CONFIG.md, "Near-duplicates"): the closest two, ``dpo`` and ``robust_dpo``, are 0.0947
apart (the next, ``hinge`` and ``aqfl``, 0.248), so 0.01, a tenth of the closest pair, keeps every library pair
apart. Adding ``eps * (beta * rho)**2`` to DPO moves it 1.17e-5 (eps = 1e-6), 1.17e-3 (1e-4), 1.16e-2 (1e-3):
perturbations up to about eps = 8e-4 are caught.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_THRESHOLD = 0.01


def _directions(profile: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    directions = (profile or {}).get("directions")
    return directions if isinstance(directions, Mapping) and directions else None


def direction_distance(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> float | None:
    """The distance of two profile dicts (see the module docstring); None when either has no directions."""
    left, right = _directions(a), _directions(b)
    if left is None or right is None or set(left) != set(right):
        return None
    worst = 0.0
    for beta, u in left.items():
        v = right[beta]
        if u is None and v is None:
            continue
        if u is None or v is None or len(u) != len(v):
            return math.inf
        worst = max(worst, math.sqrt(sum((x - y) ** 2 for x, y in zip(u, v, strict=True))))
    return worst


@dataclass(frozen=True)
class NearMatch:
    """The closest archived candidate within the threshold."""

    id: int
    name: str
    distance: float

    def reason(self) -> str:
        return (
            f"near-duplicate of #{self.id} ({self.name or 'unnamed'}), distance {self.distance:.3g} "
            "between normalised gradient directions"
        )


def nearest_within(
    profile: Mapping[str, Any] | None, others: Iterable[tuple[int, str, Mapping[str, Any] | None]], threshold: float
) -> NearMatch | None:
    """The closest of ``others`` (id, name, profile) at distance <= ``threshold``; ties go to the lower id."""
    best: NearMatch | None = None
    for cid, name, other in others:
        distance = direction_distance(profile, other)
        if distance is None or distance > threshold:
            continue
        if best is None or (distance, cid) < (best.distance, best.id):
            best = NearMatch(id=cid, name=name, distance=distance)
    return best


def library_distances() -> list[tuple[str, str, float]]:
    """Every pair of library losses with its distance, closest first (what the threshold is chosen from)."""
    from lossforge.candidates import load_library
    from lossforge.evaluate.checking.profile import compute_profile

    profiles = [(c.name, compute_profile(c.fn).to_dict()) for c in load_library(include_user=False).values()]
    pairs = []
    for i, (name_a, a) in enumerate(profiles):
        for name_b, b in profiles[i + 1 :]:
            distance = direction_distance(a, b)
            pairs.append((name_a, name_b, math.inf if distance is None else distance))
    return sorted(pairs, key=lambda pair: pair[2])


__all__ = ["DEFAULT_THRESHOLD", "NearMatch", "direction_distance", "library_distances", "nearest_within"]
