"""benchmarks/bench_proxy.py's arithmetic: the published orderings it targets, paired verdicts, the normalization
to DPO's gain over the reference and the mean across tasks, on hand-made scores."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tests.paths import ROOT

_spec = importlib.util.spec_from_file_location("bench_proxy", ROOT / "benchmarks" / "bench_proxy.py")
assert _spec is not None and _spec.loader is not None
proxy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(proxy)

# The orderings issue 19 names as holding on all three published benchmarks.
NAMED = {
    ("padll", "dpo"),
    ("dpo", "kto_pair"),
    ("dpo", "hinge"),
    ("padll", "kto_pair"),
    ("padll", "hinge"),
    ("lrml", "kto_pair"),
    ("lrml", "hinge"),
}


def test_the_targets_are_the_pairs_the_published_columns_agree_on() -> None:
    all_three = set(proxy.agreed_pairs(3))
    assert NAMED <= all_three and len(all_three) == 13
    assert ("cell", "pfl") in all_three  # 7.925 > 7.900, 57.48 > 56.14, 50.35 > 44.12
    two = set(proxy.agreed_pairs(2))
    assert ("lrml", "dpo") in two  # higher MT-Bench and AlpacaEval, lower TL;DR
    assert not two & all_three and not any(pair[::-1] in all_three for pair in two)
    assert not any("ipo" in pair for pair in all_three | two)  # ipo has MT-Bench only


def test_a_pair_is_reproduced_only_when_its_interval_excludes_zero() -> None:
    scores = {"padll": {1: 0.5, 2: 0.7, 3: 0.6}, "dpo": {1: 0.4, 2: 0.5, 3: 0.45}, "kto_pair": {1: 0.6, 2: 0.2, 3: 0.9}}
    clear = proxy.paired(scores, "padll", "dpo")
    assert clear["n"] == 3 and clear["mean"] == pytest.approx(0.15) and clear["verdict"] == "better"
    assert proxy.paired(scores, "dpo", "padll")["verdict"] == "worse"
    assert proxy.paired(scores, "dpo", "kto_pair")["verdict"] == "inconclusive"
    assert proxy.paired(scores, "dpo", "lrml") == {
        "pair": ["dpo", "lrml"],
        "n": 0,
        "mean": None,
        "ci": None,
        "verdict": "inconclusive",
    }


def test_normalized_scores_put_the_mean_reference_at_0_and_mean_dpo_at_1_and_combine_over_tasks() -> None:
    # task a: reference mean 0.5, dpo mean 0.85 (gain 0.35); task b: reference 5, dpo mean 6 (gain 1)
    task_a = {"reference": {1: 0.0, 2: 1.0}, "dpo": {1: 0.2, 2: 1.5}, "padll": {1: 0.3, 2: 1.25}}
    task_b = {"reference": {1: 5.0, 2: 5.0}, "dpo": {1: 7.0, 2: 5.0}, "padll": {1: 6.0, 2: 9.0}}
    a, b = proxy.normalized(task_a), proxy.normalized(task_b)
    assert a["dpo"] == {1: pytest.approx(-0.3 / 0.35), 2: pytest.approx(1.0 / 0.35)}
    assert a["padll"] == {1: pytest.approx(-0.2 / 0.35), 2: pytest.approx(0.75 / 0.35)}
    assert b == {"dpo": {1: 2.0, 2: 0.0}, "padll": {1: 1.0, 2: 4.0}}  # seed 2 kept: the scale is the means'
    assert sum(a["dpo"].values()) / 2 == pytest.approx(1.0) and "reference" not in a
    both = proxy.across_tasks([a, b])
    assert both["padll"] == {1: pytest.approx((-0.2 / 0.35 + 1.0) / 2), 2: pytest.approx((0.75 / 0.35 + 4.0) / 2)}
    worst = proxy.across_tasks([a, b], "min")
    assert worst["dpo"] == {1: pytest.approx(-0.3 / 0.35), 2: pytest.approx(0.0)}


def test_the_summary_orders_by_mean_and_correlates_with_each_column() -> None:
    ranked = ["lrml", "padll", "dpo", "kto_pair", "hinge"]  # AlpacaEval 2 LC's order of these five
    scores = {loss: {1: 1.0 - 0.1 * i, 2: 1.1 - 0.1 * i} for i, loss in enumerate(ranked)}
    scores["reference"] = {1: 0.0, 2: 0.0}
    result = proxy.summary(scores)
    assert [row["loss"] for row in result["order"]] == ranked
    assert result["spearman"]["alpaca_eval2_lc"] == pytest.approx(1.0)
    assert -1.0 <= result["spearman"]["mt_bench"] < 1.0 and math.isfinite(result["spearman"]["tldr"])
    lines = "\n".join(proxy.report_lines("t", result))
    assert "pairs 3 of the 3 published benchmarks order alike" in lines and "| lrml | +1.0500 |" in lines
