"""The DPOP paper's failure mode on `arithmetic` at the default budget (slow; figures in RESULTS.md).

Low edit-distance pairs (correct vs one-digit-wrong answers): under DPO the summed log-prob of the preferred
answers falls while the margin grows; DPOP's penalty on ref_chosen - policy_chosen keeps it from falling
(Pal et al., arXiv 2402.13228, Sec. 3).
"""

from __future__ import annotations

import pytest
from lossforge.candidates import load_builtin
from lossforge.evaluate.training.launcher import TrainConfig, train_candidate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [0, 1])
def test_dpo_lowers_the_preferred_logp_while_dpop_does_not(seed: int) -> None:
    config = TrainConfig(task="arithmetic", seed=seed, threads=1)
    dpo = train_candidate(load_builtin("dpo"), config)
    dpop = train_candidate(load_builtin("dpop"), config)
    assert dpo.status == dpop.status == "ok", (dpo.error, dpop.error)
    print(f"seed {seed}: dpo {dpo.metrics} | dpop {dpop.metrics}")
    assert dpo.metrics["chosen_logp_change"] < 0 < dpo.metrics["margin_change"]
    assert dpop.metrics["chosen_logp_change"] >= 0
    assert dpop.metrics["margin_change"] > 0
