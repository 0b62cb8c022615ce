"""Training-speed benchmark of issue 3, side by side in one process:

(a) overhead of the plug point: ``CandidateDPOTrainer`` with the library's ``dpo`` candidate vs TRL's built-in
    ``loss_type="sigmoid"``, both reading precomputed reference log-probs (the path candidates run on).
    Claim: ratio (candidate / built-in) <= 1.05.
(b) shared reference log-probs: a candidate's training phase with the cached reference log-probs (cache
    load included) vs TRL's default per-step reference forward pass. Claim: >= 1.25x faster.

Every variant trains the same LoRA (r=16, all-linear) on the same synthetic pairs from the same seed. Time
per step is the median over the steps after ``--warmup`` (the first steps pay for allocator warm-up); the
variants are run in interleaved rounds and the best round is kept. On CPU the clock is the process's CPU
time (``--clock``): on a shared machine wall-clock time measures the other jobs as much as this one.

    python benchmarks/bench_train.py                      # CPU, float32, Llama 64x2, 128x2, 256x4, batch 16
    python benchmarks/bench_train.py --device cuda --sizes 1b --bf16   # a ~1B Llama (GPU)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch
from lossforge.candidates import load_builtin
from lossforge.evaluate.training.candidate_trainer import CandidateDPOTrainer
from lossforge.evaluate.training.reference_cache import attach_reference_logps
from peft import LoraConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
from trl import DPOConfig, DPOTrainer

# name -> (hidden size, layers, heads, kv heads, intermediate size); "1b" is Llama-3.2-1B's body.
SIZES = {
    "64x2": (64, 2, 4, 4, 256),
    "128x2": (128, 2, 4, 4, 512),
    "256x4": (256, 4, 8, 8, 1024),
    "1b": (2048, 16, 32, 8, 8192),
}


class StepTimer(TrainerCallback):
    """Seconds of every optimizer step (forward, backward, optimizer).

    ``clock="cpu"``: this process's CPU time, which other jobs on a shared machine barely disturb (with one
    torch thread it is the work of the step); ``clock="wall"``: wall-clock time, synchronised on CUDA.
    """

    def __init__(self, clock: str) -> None:
        self.seconds: list[float] = []
        self._start = 0.0
        self._now = time.process_time if clock == "cpu" else time.perf_counter

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._sync()
        self._start = self._now()

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._sync()
        self.seconds.append(self._now() - self._start)


def synthetic_setup(vocab: int, pairs: int, seed: int) -> tuple[PreTrainedTokenizerFast, datasets.Dataset]:
    """A word-level tokenizer over ``vocab`` words and pairs with 8-24-token prompts and completions."""
    words = [f"t{i}" for i in range(vocab - 3)]
    table = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *words])}
    core = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choices(words, k=rng.randint(low, high)))

    rows = [{"prompt": text(8, 24), "chosen": " " + text(8, 24), "rejected": " " + text(8, 24)} for _ in range(pairs)]
    return tokenizer, datasets.Dataset.from_list(rows)


def build_model(size: str, vocab: int, device: str) -> LlamaForCausalLM:
    hidden, layers, heads, kv_heads, intermediate = SIZES[size]
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128, pad_token_id=0,
        eos_token_id=1, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).float()


def dpo_args(out: str, steps: int, batch: int, device: str, bf16: bool, precompute: bool, **extra: object) -> DPOConfig:
    return DPOConfig(
        output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=5e-4,
        lr_scheduler_type="cosine", warmup_steps=0.1, beta=0.1, max_length=64, seed=0, logging_steps=10_000,
        save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=device == "cpu", bf16=bf16,
        gradient_checkpointing=False, precompute_ref_log_probs=precompute, dataloader_num_workers=0, **extra,
    )  # fmt: skip


def lora() -> LoraConfig:
    return LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


def run_variant(
    variant: str, size: str, ns: argparse.Namespace, data: datasets.Dataset, tok, cache: Path
) -> tuple[float, float]:
    """(median seconds per step after warm-up, seconds to obtain reference log-probs) of one variant."""
    model = build_model(size, len(tok), ns.device)
    common = {"model": model, "train_dataset": data, "processing_class": tok, "peft_config": lora()}
    with tempfile.TemporaryDirectory() as out:
        precompute = variant == "trl_sigmoid_precomputed"
        args = dpo_args(out, ns.steps, ns.batch, ns.device, ns.bf16, precompute)
        if variant.startswith("trl_sigmoid"):
            trainer: DPOTrainer = DPOTrainer(args=args, **common)
            ref_seconds = 0.0
        else:
            trainer = CandidateDPOTrainer(args=args, loss_fn=load_builtin("dpo").fn, **common)
            start = time.perf_counter()
            attach_reference_logps(trainer, task_key=f"bench-{size}", cache_dir=cache)  # a hit after round 1
            ref_seconds = time.perf_counter() - start
        timer = StepTimer(ns.clock)
        trainer.add_callback(timer)
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its summary; stdout holds the table
            trainer.train()
    return statistics.median(timer.seconds[ns.warmup :]), ref_seconds


VARIANTS = ("trl_sigmoid_precomputed", "candidate_cached", "trl_sigmoid_per_step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64x2,128x2,256x4", help=f"comma-separated, of: {', '.join(SIZES)}")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU); the claims are stated for float32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--clock", choices=("auto", "cpu", "wall"), default="auto", help="auto: process CPU time on CPU, wall on CUDA"
    )
    ns = parser.parse_args()
    if ns.clock == "auto":
        ns.clock = "cpu" if ns.device == "cpu" else "wall"
    if ns.threads:
        torch.set_num_threads(ns.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok, data = synthetic_setup(ns.vocab, ns.batch * (ns.steps + 1), seed=0)
    print(f"# bench_train: device={ns.device} bf16={ns.bf16} batch={ns.batch} steps={ns.steps} "
          f"rounds={ns.rounds} threads={torch.get_num_threads()} clock={ns.clock} torch={torch.__version__}", file=sys.stderr)  # fmt: skip
    print("| model | TRL sigmoid, precomputed ref (ms/step) | dpo candidate, cached ref (ms/step) | (a) ratio | "
          "TRL sigmoid, per-step ref (ms/step) | (b) speed-up | ref cache load (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache_dir:
        for size in ns.sizes.split(","):
            best = {v: float("inf") for v in VARIANTS}
            load_seconds = float("inf")
            for round_index in range(ns.rounds):
                for variant in VARIANTS:
                    step, ref_seconds = run_variant(variant, size, ns, data, tok, Path(cache_dir))
                    best[variant] = min(best[variant], step)
                    if variant == "candidate_cached" and round_index > 0:
                        load_seconds = min(load_seconds, ref_seconds)
                print(f"# {size} round {round_index + 1}: " + ", ".join(f"{v} {best[v] * 1e3:.1f} ms" for v in VARIANTS),
                      file=sys.stderr, flush=True)  # fmt: skip
            ratio = best["candidate_cached"] / best["trl_sigmoid_precomputed"]
            # Per candidate: the cached path also pays the cache load once, spread over the run's steps.
            cached_per_step = best["candidate_cached"] + (load_seconds if load_seconds < float("inf") else 0) / ns.steps
            speedup = best["trl_sigmoid_per_step"] / cached_per_step
            print(f"| Llama {size} | {best['trl_sigmoid_precomputed'] * 1e3:.1f} | {best['candidate_cached'] * 1e3:.1f} | "
                  f"{ratio:.3f} | {best['trl_sigmoid_per_step'] * 1e3:.1f} | {speedup:.2f}x | {load_seconds:.2f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
