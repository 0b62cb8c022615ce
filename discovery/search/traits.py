"""Yes/no behavioural traits of a candidate, read off the checker's profile (``LossProfile.to_dict()``).

They are the words the running lessons compare scores by (``lessons``) and the axes of the niche grid
(``niches``). Four come straight from the profile; two are read off its dloss/drho curve at beta = 0.5, where
beta * rho spans +-20 on the curve's rho range of +-40:

- ``bounded``: the loss flattens for very negative margins (|slope| at rho = -40 at most a tenth of the
  curve's largest |slope|), as sigmoid or clipped losses do; DPO grows linearly there and is not;
- ``targets_margin``: the loss rises again at large positive margins (slope > 0 at rho = +40), i.e. it pulls
  the margin toward a target as IPO does, instead of pushing it up without bound.

A trait the profile cannot tell (a failed curve, an old archive without the field) is left out, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# name -> (what a True says, what a False says), in plain words for prompts and tables.
TRAITS: dict[str, tuple[str, str]] = {
    "rho_only": ("margin-only", "not margin-only"),
    "batch_coupled": ("batch-coupled", "per-pair"),
    "convex": ("convex", "non-convex"),
    "stable_extremes": ("stable at extreme margins", "unstable at extreme margins"),
    "bounded": ("bounded", "unbounded"),
    "targets_margin": ("margin-targeting", "margin-maximising"),
}
CURVE_BETA = "0.5"
_FLAT = 0.1  # |slope| at the far negative end, relative to the largest |slope|, below which a loss is bounded


def _curve_traits(profile: Mapping[str, Any]) -> dict[str, bool]:
    slope = ((profile.get("curves") or {}).get("dloss_drho") or {}).get(CURVE_BETA)
    if not slope or any(v is None for v in slope):
        return {}
    peak = max(abs(v) for v in slope)
    if peak == 0.0:
        return {}
    return {"bounded": abs(slope[0]) <= _FLAT * peak, "targets_margin": slope[-1] > 1e-6 * peak}


def traits(profile: Mapping[str, Any] | None) -> dict[str, bool]:
    """The traits ``profile`` determines, by name (see ``TRAITS``); empty for a row without a profile."""
    if not profile:
        return {}
    found = {
        name: value
        for name in ("rho_only", "batch_coupled", "convex", "stable_extremes")
        if isinstance(value := profile.get(name), bool)
    }
    return {**found, **_curve_traits(profile)}


def label(name: str, value: bool) -> str:
    """The plain-words label of one trait value: ``label("bounded", False) == "unbounded"``."""
    yes, no = TRAITS[name]
    return yes if value else no


__all__ = ["TRAITS", "label", "traits"]
