"""check(): the three layers behind one call, the stage that stops a candidate, and the whole library passing."""

from __future__ import annotations

import json

import pytest
from lossforge.candidates import load_library
from lossforge.evaluate import check
from lossforge.evaluate.checking.checker import check_many, detect_format

from tests.strict_isolation import assert_protections

DPO = (
    '"""DPO."""\n\nimport torch.nn.functional as F\n\nNAME = "dpo_copy"\nDESCRIPTION = "logistic"\n\n\n'
    "def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
    "    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)\n"
    "    return -F.logsigmoid(beta * margin)\n"
)


def test_every_library_entry_passes() -> None:
    library = load_library()
    reports = check_many([c.source for c in library.values()], workers=2, paths=list(library))
    failures = {r.path: (r.stage, r.errors) for r in reports if not r.passed}
    assert failures == {}
    assert all(r.stage == "ok" and r.isolation for r in reports)
    fingerprints = [r.fingerprint for r in reports]
    assert all(fingerprints) and len(set(fingerprints)) == len(fingerprints)  # distinct losses never collide


def test_reply_passes_and_keeps_name_and_thought() -> None:
    reply = "Sure:\n```json\n" + json.dumps({"thought": "plain DPO", "name": "again", "code": DPO}) + "\n```"
    report = check(reply)
    assert (report.passed, report.stage, report.name, report.thought) == (True, "ok", "again", "plain DPO")
    assert report.code == DPO and report.errors == []


def test_parse_stage() -> None:
    report = check("this is not JSON and not Python {", fmt="reply")
    assert (report.passed, report.stage) == (False, "parse")
    assert "contains no JSON object" in report.errors[0]


def test_static_stage_collects_every_error() -> None:
    report = check(DPO.replace("    return", "    open('x', 'w')\n    print(beta)\n    return"))
    assert report.stage == "static" and len(report.errors) == 2 and not report.isolation


def test_sandbox_stage() -> None:
    report = check(DPO.replace("return -F.logsigmoid(beta * margin)", "return -F.logsigmoid(beta * margin).mean()"))
    assert report.stage == "sandbox" and "returned shape ()" in report.errors[0]
    assert_protections(report.isolation)


def test_static_policy_off_still_runs_the_sandbox() -> None:
    printing = DPO.replace("    return", "    print('hello')\n    return")
    assert check(printing).stage == "static"
    report = check(printing, static_policy=False)
    assert report.passed and report.stage == "ok"  # printing is harmless; the runtime layer let it run


def test_package_level_api_is_callable() -> None:
    import lossforge.evaluate

    # Importing the submodule rebinds the package attribute to it; calling it must still check.
    assert lossforge.evaluate.check(DPO).passed


def test_format_detection() -> None:
    assert detect_format(DPO) == "python"
    assert detect_format(json.dumps({"thought": "", "name": "x", "code": DPO})) == "reply"
    assert detect_format("def loss(:\n") == "python"  # reported as a syntax error, not a missing JSON object


def test_bad_format_argument_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="fmt must be one of auto, python, reply"):
        check(DPO, fmt="yaml")  # type: ignore[arg-type]
