"""Multi-seed statistics: Student-t quantiles, intervals and paired verdicts against closed-form values; the
search and held-out seeds never meet."""

from __future__ import annotations

import math

import pytest
from lossforge.discovery.config import build_config
from lossforge.discovery.seeds import HELDOUT_BASE, heldout_seeds, search_seeds
from lossforge.discovery.stats import statistics
from lossforge.discovery.stats.seed_stats import PairedStats, SeedStats
from lossforge.evaluate.config_error import ConfigError

# t_{0.975, df}: closed forms for df = 1 (Cauchy: tan(0.475 pi)) and df = 2 (F(t) = 1/2 + t / (2 sqrt(t^2 + 2)),
# so t = a sqrt(2 / (1 - a^2)) with a = 0.95); tabulated values for df = 4, 9, 30.
T975 = {
    1: math.tan(math.pi * 0.475),
    2: 0.95 * math.sqrt(2.0 / (1.0 - 0.95**2)),
    4: 2.776445,
    9: 2.262157,
    30: 2.042272,
}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_closed_forms_and_tables(df: int) -> None:
    assert statistics.t_quantile(0.975, df) == pytest.approx(T975[df], abs=2e-6)
    assert statistics.t_quantile(0.025, df) == pytest.approx(-T975[df], abs=2e-6)
    assert statistics.t_cdf(statistics.t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-10)


def test_interval_and_paired_verdicts() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, s = sqrt(2.5), se = sqrt(0.5)
    assert statistics.mean(values) == 3.0
    assert statistics.stderr(values) == pytest.approx(math.sqrt(0.5))
    lo, hi = statistics.confidence_interval(values)  # type: ignore[misc]
    assert (lo, hi) == pytest.approx((3 - T975[4] * math.sqrt(0.5), 3 + T975[4] * math.sqrt(0.5)), abs=1e-5)
    assert statistics.stderr([1.0]) is None and statistics.confidence_interval([1.0]) is None

    seeds = [0, 1, 2, 3]
    base = [0.50, 0.60, 0.40, 0.55]
    better = PairedStats.between(
        seeds,
        [b + 0.1 + e for b, e in zip(base, (0.01, -0.01, 0.0, 0.005))],
        seeds,
        base,
        baseline="dpo",
        baseline_id=1,
    )
    assert better is not None and better.verdict == "better" and better.baseline_id == 1
    assert better.diffs == pytest.approx([0.11, 0.09, 0.1, 0.105])
    worse = PairedStats.between(seeds, [b - 0.1 for b in base], seeds, base, baseline="dpo", baseline_id=1)
    assert worse is not None and worse.verdict == "worse"
    noisy = PairedStats.between(
        seeds, [b + e for b, e in zip(base, (0.05, -0.05, 0.04, -0.03))], seeds, base, baseline="dpo", baseline_id=1
    )
    assert noisy is not None and noisy.verdict == "inconclusive"
    # Only the seeds both were scored on are paired; none in common, no comparison.
    assert PairedStats.between([0, 9], [1.0, 2.0], seeds, base, baseline="dpo", baseline_id=1).diffs == (0.5,)  # type: ignore[union-attr]
    assert PairedStats.between([8, 9], [1.0, 2.0], seeds, base, baseline="dpo", baseline_id=1) is None
    stats = SeedStats.of(seeds, base)
    assert stats.ranking_score("lcb") == stats.ci[0] < stats.ranking_score("mean")  # type: ignore[index]


@pytest.mark.parametrize("run_seed", [0, 1, 7, 12345, HELDOUT_BASE - 100])
def test_heldout_seeds_are_disjoint_from_search_seeds_by_construction(run_seed: int) -> None:
    search = set(search_seeds(run_seed, 50))
    held = heldout_seeds(run_seed, 200)
    assert len(set(held)) == 200 and not search & set(held)
    assert all(HELDOUT_BASE <= s < 2 * HELDOUT_BASE for s in held) and all(s < HELDOUT_BASE for s in search)
    assert heldout_seeds(run_seed, 5) == held[:5]  # a resumed confirmation asks for the same seeds
    assert search_seeds(run_seed, 1) == (run_seed,)  # one seed: the run seed, as before multi-seed scores


def test_config_refuses_search_seeds_in_the_heldout_range() -> None:
    with pytest.raises(ConfigError, match="held out for confirmation"):
        build_config({"training": {"seeds": [3, HELDOUT_BASE + 1]}})
    with pytest.raises(ConfigError, match="held out for confirmation"):
        build_config({"seed": HELDOUT_BASE - 1, "training": {"seeds": 2}})
    with pytest.raises(ConfigError, match="rank_by 'lcb' needs training.seeds >= 2"):
        build_config({"search": {"rank_by": "lcb"}})
    with pytest.raises(ConfigError, match="baseline 'lrml' must be one of search.seed_candidates"):
        build_config({"search": {"baseline": "lrml"}})
    assert build_config({"training": {"seeds": 3}, "seed": 5}).search_seeds() == (5, 6, 7)
