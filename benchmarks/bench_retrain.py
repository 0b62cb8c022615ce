"""Retrain benchmark of issue 10: the ``lora`` recipe on a ~1B-parameter Llama, 50 steps, through ``lossforge retrain``.

The model is built from a config (Llama-3.2-1B's body: hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP
8192; a 32,000-word vocabulary, untied: about 1.1B parameters) with random weights and saved with
``save_pretrained``; the tokenizer is a word-level one built locally; the pairs are synthetic (a prompt of
``--prompt-words`` words, chosen and rejected completions of ``--completion-words`` words). Nothing is
downloaded. The run is the real command -- ``accelerate launch``, ``CandidateDPOTrainer``, LoRA r=16 on all
projections, batch 4 x accumulation 4, gradient checkpointing, paged AdamW where bitsandbytes is installed --
and the figures come from its ``train_log.json``: mean seconds per optimizer step (the first excluded),
training tokens per second, peak GPU memory.

    python benchmarks/bench_retrain.py --device cuda                 # the GPU run RESULTS.md asks for
    python benchmarks/bench_retrain.py --device cpu --size tiny --steps 3   # a smoke run of the script itself
    python benchmarks/bench_retrain.py --device cuda --model gemma-3-270m-q4_k_m.gguf   # a real model instead

``--model`` (a ``.gguf`` file, a ``save_pretrained`` directory or a hub id) trains that model instead of a random
one; the synthetic words then split into several of its tokens each.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lossforge.discovery.storage.provenance import hardware_line

# name -> (hidden size, layers, heads, kv heads, intermediate size, vocabulary)
SIZES = {"tiny": (64, 2, 4, 4, 256, 512), "1b": (2048, 16, 32, 8, 8192, 32000)}


def build_model(directory: Path, size: str, seed: int) -> int:
    """A random Llama of ``size`` and a word-level tokenizer over its vocabulary, saved; its parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    hidden, layers, heads, kv_heads, intermediate, vocab_size = SIZES[size]
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(vocab_size - len(specials))])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def count_parameters(location: str) -> int:
    """Parameters of the model at ``location`` (resolved as lossforge resolves it), counted without its weights."""
    import torch
    from lossforge.evaluate.model_source import resolve_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_model(location))  # converts a GGUF once, outside the meta device
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def write_pairs(path: Path, n: int, *, vocab_size: int, prompt_words: int, completion_words: int, seed: int) -> None:
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(vocab_size - 4)}" for _ in range(k))

    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n):
            row = {
                "prompt": words(prompt_words),
                "chosen": " " + words(completion_words),
                "rejected": " " + words(completion_words),
            }
            handle.write(json.dumps(row) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--size", choices=tuple(SIZES), default="1b")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--prompt-words", type=int, default=256)
    parser.add_argument("--completion-words", type=int, default=256)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--model", default=None, help="a real model (.gguf, directory, hub id) instead of --size")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    ns = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on
    import torch

    if ns.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    work = ns.work or Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    work.mkdir(parents=True, exist_ok=True)
    if ns.model is None:
        params, model = build_model(work / "model", ns.size, seed=0), str(work / "model")
    else:
        params, model = count_parameters(ns.model), ns.model
    pairs_needed = ns.steps * 16 * ns.num_processes  # the lora recipe: batch 4 x accumulation 4 per process
    write_pairs(
        work / "pairs.jsonl",
        int(pairs_needed / 0.9) + 16,
        vocab_size=SIZES[ns.size][5],
        prompt_words=ns.prompt_words,
        completion_words=ns.completion_words,
        seed=0,
    )
    out = work / f"out-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [
        sys.executable,
        "-c",
        "from lossforge.discovery.cli import main; main()",
        "retrain",
        "dpo",
        "--model",
        model,
        "--dataset",
        str(work / "pairs.jsonl"),
        "--recipe",
        "lora",
        "--num-processes",
        str(ns.num_processes),
        "--out",
        str(out),
        "--eval-samples",
        "32",
        "--set",
        f"max_steps={ns.steps}",
        "--set",
        "warmup_steps=5",
        "--set",
        "logging_steps=10",
    ]
    print("$ " + " ".join(command[3:]), file=sys.stderr)
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        print(f"error: lossforge retrain exited with {completed.returncode}", file=sys.stderr)
        return 1
    log = json.loads((out / "train_log.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    device = torch.cuda.get_device_name(0) if ns.device == "cuda" else "cpu"
    figures = {
        "device": device,
        "parameters": params,
        "steps": log["global_steps"],
        "step_seconds_mean": round(log["step_seconds_mean"], 3),
        "tokens_per_second": round(log["tokens_per_second"]),
        "peak_memory_gb": round(log.get("peak_memory_gb", 0.0), 2),
        "optimizer": log["optimizer"],
        "precision": log["precision"],
        "gradient_checkpointing": log["gradient_checkpointing"],
        "distributed": log["distributed"],
        "train_seconds": round(log["train_seconds"], 1),
        "command_seconds": round(time.perf_counter() - started, 1),
        "pref_accuracy": metrics["metrics"]["pref_accuracy"],
    }
    print(json.dumps(figures, indent=2))
    print(
        f"| {device} | {params / 1e9:.2f}B | {figures['steps']} | {figures['step_seconds_mean']} s | "
        f"{figures['tokens_per_second']} | {figures['peak_memory_gb']} GiB | {figures['optimizer']} | "
        f"{figures['precision']} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
