"""Near-duplicate rejection (issue 11, item 2): the distance between normalised gradient directions, the
threshold measured on the library, and the loop refusing a perturbed DPO before any training is spent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lossforge.candidates import BUILTIN_NAMES, load_builtin
from lossforge.discovery.loop import run_discovery
from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.checking.fingerprint import FINGERPRINT_BETAS, fingerprint_of
from lossforge.evaluate.checking.near_duplicates import (
    DEFAULT_THRESHOLD,
    direction_distance,
    library_distances,
    nearest_within,
)
from lossforge.evaluate.checking.profile import compute_profile

from tests.openai_server import OpenAIServer, openai_server
from tests.scripted_llm import HEAD, ScriptBySlot, llm_run_config, reply

__all__ = ["openai_server"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DPO = load_builtin("dpo").fn
TINY = {"task": "tests.tiny_task:TinyTask", "steps": 1, "eval_samples": 4}
PERTURBED = HEAD + "    return -F.logsigmoid(beta * margin) + 1e-5 * (beta * margin) ** 2\n"


def _perturbed_dpo(eps: float) -> Callable[..., object]:
    def loss(pc, pr, rc, rr, beta):  # type: ignore[no-untyped-def]
        return DPO(pc, pr, rc, rr, beta) + eps * (beta * ((pc - rc) - (pr - rr))) ** 2

    return loss


def test_profile_stores_one_unit_direction_per_beta() -> None:
    directions = compute_profile(DPO).to_dict()["directions"]
    assert set(directions) == {f"{b:g}" for b in FINGERPRINT_BETAS}
    for vector in directions.values():
        assert len(vector) == 32 and sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-7)


def test_a_tiny_perturbation_of_dpo_is_near_but_not_an_exact_twin() -> None:
    base = compute_profile(DPO).to_dict()
    perturbed = _perturbed_dpo(1e-4)
    assert fingerprint_of(perturbed) != base["fingerprint"]  # the exact dedup would train it
    distance = direction_distance(base, compute_profile(perturbed).to_dict())
    assert distance is not None and 0 < distance <= DEFAULT_THRESHOLD
    assert direction_distance(base, compute_profile(_perturbed_dpo(1e-2)).to_dict()) > DEFAULT_THRESHOLD
    assert direction_distance(base, base) == 0.0
    match = nearest_within(compute_profile(perturbed).to_dict(), [(7, "dpo", base)], DEFAULT_THRESHOLD)
    assert match is not None and match.id == 7 and match.reason().startswith("near-duplicate of #7 (dpo), distance ")


def test_a_beta_that_failed_on_one_side_only_is_infinitely_far() -> None:
    base = compute_profile(DPO).to_dict()
    broken = {"directions": {**base["directions"], "0.5": None}}
    assert direction_distance(base, broken) == float("inf")
    assert direction_distance(base, {"directions": {}}) is None and direction_distance(None, base) is None


def test_every_pair_of_library_losses_is_kept_apart() -> None:
    pairs = library_distances()
    assert len(pairs) == len(BUILTIN_NAMES) * (len(BUILTIN_NAMES) - 1) // 2
    closest = pairs[0]
    assert closest[2] > DEFAULT_THRESHOLD, closest
    # The figure the README and the threshold's docstring quote.
    assert {closest[0], closest[1]} == {"dpo", "robust_dpo"} and closest[2] == pytest.approx(0.0947, abs=5e-4)


def test_the_loop_rejects_a_near_duplicate_before_training(
    tmp_path: Path, openai_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    script = ScriptBySlot({(1, 0, 0): [reply("dpo_plus", PERTURBED)]})
    server = openai_server([], default=script, api_key="sk-test")
    config = llm_run_config(
        tmp_path,
        server,
        search={
            "generations": 1,
            "population": 1,
            "repair_rounds": 0,
            "seed_candidates": ["dpo"],
            "near_duplicates": DEFAULT_THRESHOLD,
        },
        training=TINY,
    )
    summary = run_discovery(config, tmp_path / "run", progress=False)
    with Archive.open(tmp_path / "run") as archive:
        rows = {row.proposal_key: row for row in archive.candidates()}
    dpo, near = rows["g0-i0-r0"], rows["g1-i0-r0"]
    assert near.fingerprint != dpo.fingerprint
    assert (near.status, near.stage) == ("duplicate", "dedup")
    assert (near.reason or "").startswith(f"near-duplicate of #{dpo.id} (dpo), distance ")
    assert "train_start" not in near.timings and near.score is None
    assert summary.counts == {"ok": 1, "duplicate": 1}
