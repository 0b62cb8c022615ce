"""A scripted LLM for discovery runs against tests/openai_server.py: losses as code, replies in the proposal
format, a script keyed by (generation, proposal, repair round), and the run config that points at the server."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from lossforge.discovery.config import RunConfig, build_config

from tests.openai_server import OpenAIServer, server_error

# Smoke budget shared by the loop tests, so the seed results cached by the first run serve the others.
TRAINING = {"task": "sentiment", "steps": 2, "eval_samples": 8}

HEAD = (
    "import torch\nimport torch.nn.functional as F\n\n\n"
    "def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
    "    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)\n"
)
SHIFTED = HEAD + "    return -F.logsigmoid(beta * margin - 0.5)\n"
SQUARED = HEAD + "    return F.softplus(1.0 - beta * margin) ** 2\n"
MIXED = HEAD + "    return F.softplus(-beta * margin) + 0.5 * F.relu(0.3 - beta * margin)\n"
DPO_REWRITE = HEAD + "    return 2.0 * F.softplus(-beta * margin) + 3.0\n"  # 2 * DPO + 3: trains like DPO
LEAKY = "import os\n" + HEAD + "    return -F.logsigmoid(beta * margin)\n"


def reply(name: str, code: str, thought: str = "an idea") -> str:
    return json.dumps({"thought": thought, "name": name, "code": code})


def slot(body: dict[str, Any]) -> tuple[int, int, int]:
    """(generation, proposal index, repair round) of a chat request, read from the rendered prompt."""
    text = "\n".join(m["content"] for m in body["messages"])
    g, p = re.search(r"Generation (\d+), proposal (\d+)\.", text).groups()  # type: ignore[union-attr]
    repair = re.search(r"repair round (\d+) of", text)
    return int(g), int(p) - 1, int(repair.group(1)) if repair else 0


class ScriptBySlot:
    """Server script keyed by (generation, index, round): concurrent requests get their own replies."""

    def __init__(self, plan: dict[tuple[int, int, int], list[Any]]) -> None:
        self.plan = {key: list(items) for key, items in plan.items()}
        self.arrivals: dict[tuple[int, int, int], list[float]] = {}
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Any:
        key = slot(body)
        with self._lock:
            self.arrivals.setdefault(key, []).append(time.monotonic())
            items = self.plan.get(key)
            return items.pop(0) if items else server_error(500)


def llm_run_config(tmp_path: Path, server: OpenAIServer, **groups: Any) -> RunConfig:
    data: dict[str, Any] = {
        "proposer": {
            "kind": "openai",
            "model": "fake-model",
            "base_url": server.base_url,
            "max_retries": 3,
            "timeout_s": 1.0,
        },
        "search": {"generations": 2, "population": 2, "repair_rounds": 2, "confirm": {"top_k": 0}},
        "training": TRAINING,
        "out": str(tmp_path / "run"),
    }
    for key, value in groups.items():
        data[key] = {**data.get(key, {}), **value}
    return build_config(data)
