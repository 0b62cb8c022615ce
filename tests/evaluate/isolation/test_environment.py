"""What a process that runs candidate code may see of the environment (evaluate/isolation/environment.py)."""

from __future__ import annotations

import os

import pytest
from lossforge.evaluate.isolation.environment import (
    candidate_environment,
    is_allowed,
    is_secret,
    process_environment_reduced,
)


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "MY_SECRET",
        "DB_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "ANTHROPIC_BASE_URL",
        "GITHUB_TOKEN",
        "LOSSFORGE_JUDGE_KEY",
        "hf_token",
        "WANDB_API_KEY",
        "PYTHON_API_KEY",
    ],
)
def test_credentials_never_pass(name: str) -> None:
    assert is_secret(name) or not is_allowed(name)
    assert candidate_environment({name: "x"}) == {}


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "HOME",
        "LD_LIBRARY_PATH",
        "TOKENIZERS_PARALLELISM",
        "OMP_NUM_THREADS",
        "OPENBLAS_CORETYPE",
        "CUDA_VISIBLE_DEVICES",
        "HF_HOME",
        "LOSSFORGE_CACHE",
        "LC_ALL",
        "PYTHONHASHSEED",
        "NCCL_DEBUG",
    ],
)
def test_what_programs_libraries_threads_devices_and_caches_need_passes(name: str) -> None:
    assert candidate_environment({name: "x"}) == {name: "x"}


def test_anything_else_is_dropped() -> None:
    assert candidate_environment({"DISPLAY": ":0", "SSH_AUTH_SOCK": "/tmp/s", "RANDOM_SETTING": "1"}) == {}


def test_the_reduction_changes_what_exec_inherits_not_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with process_environment_reduced():
        assert os.environ["OPENAI_API_KEY"] == "sk-test"  # other threads keep reading it
        child = os.popen("env").read()
        assert "OPENAI_API_KEY" not in child and "PATH=" in child
    assert "OPENAI_API_KEY=sk-test" in os.popen("env").read()
