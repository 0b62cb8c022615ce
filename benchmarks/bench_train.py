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

Per variant it also reports ms/step, tokens/s, MFU (CUDA only) and peak memory (CUDA only):

- tokens per step: the non-padding tokens of the step's batch (prompt + completion, chosen and rejected both
  count, after ``max_length`` truncation), as the Trainer counts them (``include_num_input_tokens_seen``);
  tokens/s = mean tokens per timed step / median step time (per CPU-second with ``--clock cpu``).
- model FLOPs per token: ``4N + 6N_lora`` for a LoRA step, ``+ 2N`` where the reference forward runs every step
  (``trl_sigmoid_per_step``). N = parameters used in matmuls (all but the input embedding table); the frozen
  base costs a forward (2N) and a backward through the activations (2N) but no weight gradients, the adapters
  a forward, an activation and a weight gradient (2+2+2 N_lora). The attention-score term (4 x layers x seq
  x hidden per token forward) is left out: under 1% at these lengths (max_length 64).
- MFU = FLOPs per token x tokens/s / ``--peak-tflops`` (default by dtype for an H100/H200 SXM, dense: 989
  bf16, 67 float32 without TF32, torch's default).
- peak memory: ``torch.cuda.max_memory_allocated`` over the variant (model, optimizer, activations), reset
  before each variant.

    python benchmarks/bench_train.py                      # CPU, float32, Llama 64x2, 128x2, 256x4, batch 16
    python benchmarks/bench_train.py --device cuda --sizes 1b --bf16   # a ~1B Llama (GPU)
    python benchmarks/bench_train.py --quick              # toy size on CPU in about a minute (smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from lossforge.candidates import load_builtin
from lossforge.discovery.storage.provenance import hardware_line
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
    """Seconds and non-padding input tokens of every optimizer step (forward, backward, optimizer).

    ``clock="cpu"``: this process's CPU time, which other jobs on a shared machine barely disturb (with one
    torch thread it is the work of the step); ``clock="wall"``: wall-clock time, synchronised on CUDA.
    """

    def __init__(self, clock: str) -> None:
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self._start = 0.0
        self._tokens_before = 0
        self._now = time.process_time if clock == "cpu" else time.perf_counter

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._sync()
        self._tokens_before = state.num_input_tokens_seen
        self._start = self._now()

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._sync()
        self.seconds.append(self._now() - self._start)
        self.tokens.append(state.num_input_tokens_seen - self._tokens_before)


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
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).float()


def dpo_args(out: str, steps: int, batch: int, device: str, bf16: bool, precompute: bool) -> DPOConfig:
    return DPOConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=5e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        beta=0.1,
        max_length=64,
        seed=0,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        bf16=bf16,
        gradient_checkpointing=False,
        precompute_ref_log_probs=precompute,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",  # the tokens/s figure; StepTimer reads it per step
    )


def lora() -> LoraConfig:
    return LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


@dataclass
class Measured:
    """One variant's run: median seconds per step after warm-up and what the step did."""

    step_s: float
    ref_s: float  # seconds to obtain the reference log-probs (candidate path: cache hit after round 1)
    tokens_per_step: float  # mean non-padding tokens of the timed steps (chosen + rejected)
    flops_per_token: float  # model FLOPs, the formula of the module docstring
    peak_bytes: int | None  # torch.cuda.max_memory_allocated; None on CPU

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls: all but the input embedding table (a lookup, no FLOPs)."""
    embedding = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embedding


def run_variant(variant: str, size: str, ns: argparse.Namespace, data: datasets.Dataset, tok, cache: Path) -> Measured:
    """Train one variant for ``ns.steps`` steps and measure it."""
    gc.collect()  # the previous variant's model and optimizer must not count in this one's peak memory
    if ns.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(size, len(tok), ns.device)
    base_params = matmul_params(model)
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
        lora_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        timer = StepTimer(ns.clock)
        trainer.add_callback(timer)
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its summary; stdout holds the table
            trainer.train()
    timed_tokens = timer.tokens[ns.warmup :]
    reference_forward = 2 * base_params if variant == "trl_sigmoid_per_step" else 0
    return Measured(
        step_s=statistics.median(timer.seconds[ns.warmup :]),
        ref_s=ref_seconds,
        tokens_per_step=sum(timed_tokens) / len(timed_tokens),
        flops_per_token=4 * base_params + 6 * lora_params + reference_forward,
        peak_bytes=torch.cuda.max_memory_allocated() if ns.device == "cuda" else None,
    )


VARIANTS = ("trl_sigmoid_precomputed", "candidate_cached", "trl_sigmoid_per_step")
# Dense peak of an H100/H200 SXM in TFLOP/s: bf16 tensor cores; float32 without TF32 (torch's default for matmuls).
PEAK_TFLOPS = {"bf16": 989.0, "float32": 67.0}


def variant_row(size: str, variant: str, measured: Measured, ns: argparse.Namespace) -> str:
    """A row of the per-variant table; MFU and peak memory only on CUDA."""
    mfu, memory = "-", "-"
    if ns.device == "cuda":
        mfu = f"{measured.flops_per_token * measured.tokens_per_s / (ns.peak_tflops * 1e12):.1%}"
        memory = f"{(measured.peak_bytes or 0) / 2**30:.2f}"
    return (
        f"| Llama {size} | {variant} | {measured.step_s * 1e3:.1f} | {measured.tokens_per_step:.0f} | "
        f"{measured.tokens_per_s:,.0f} | {measured.flops_per_token / 1e9:.3g} | {mfu} | {memory} |"
    )


def summary_row(size: str, best: dict[str, Measured], load_seconds: float | None, steps: int) -> str:
    """(a) candidate / TRL ratio and (b) cached vs per-step reference speed-up of one size."""
    ratio = best["candidate_cached"].step_s / best["trl_sigmoid_precomputed"].step_s
    # Per candidate: the cached path also pays the cache load once, spread over the run's steps.
    cached_per_step = best["candidate_cached"].step_s + (load_seconds or 0.0) / steps
    speedup = best["trl_sigmoid_per_step"].step_s / cached_per_step
    load = "-" if load_seconds is None else f"{load_seconds:.2f}"  # a hit needs a second round
    return (
        f"| Llama {size} | {best['trl_sigmoid_precomputed'].step_s * 1e3:.1f} | "
        f"{best['candidate_cached'].step_s * 1e3:.1f} | {ratio:.3f} | "
        f"{best['trl_sigmoid_per_step'].step_s * 1e3:.1f} | "
        f"{speedup:.2f}x | {load} |"
    )


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
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's dense peak for MFU (default: 989 bf16, 67 fp32)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="toy size: --sizes 64x2 --steps 6 --warmup 2 --rounds 1 --threads 1"
    )
    ns = parser.parse_args()
    print(f"# machine: {hardware_line()}", flush=True)  # RESULTS.md rows name the machine they ran on
    if ns.quick:
        ns.sizes, ns.steps, ns.warmup, ns.rounds, ns.threads = "64x2", 6, 2, 1, ns.threads or 1
    if ns.steps <= ns.warmup:
        parser.error(f"--steps {ns.steps} must exceed --warmup {ns.warmup}: only the steps after it are timed")
    if ns.clock == "auto":
        ns.clock = "cpu" if ns.device == "cpu" else "wall"
    if ns.peak_tflops is None:
        ns.peak_tflops = PEAK_TFLOPS["bf16" if ns.bf16 else "float32"]
    if ns.threads:
        torch.set_num_threads(ns.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok, data = synthetic_setup(ns.vocab, ns.batch * (ns.steps + 1), seed=0)
    print(
        f"# bench_train: device={ns.device} bf16={ns.bf16} batch={ns.batch} steps={ns.steps} warmup={ns.warmup} "
        f"rounds={ns.rounds} threads={torch.get_num_threads()} clock={ns.clock} torch={torch.__version__}"
        + (f" gpu={torch.cuda.get_device_name()} peak={ns.peak_tflops:g} TFLOP/s" if ns.device == "cuda" else ""),
        file=sys.stderr,
    )
    summary, per_variant = [], []
    with tempfile.TemporaryDirectory() as cache_dir:
        for size in ns.sizes.split(","):
            best: dict[str, Measured] = {}
            load_seconds: float | None = None
            for round_index in range(ns.rounds):
                for variant in VARIANTS:
                    measured = run_variant(variant, size, ns, data, tok, Path(cache_dir))
                    if variant not in best or measured.step_s < best[variant].step_s:
                        best[variant] = measured
                    if variant == "candidate_cached" and round_index > 0:
                        load_seconds = min(load_seconds or float("inf"), measured.ref_s)
                print(
                    f"# {size} round {round_index + 1}: "
                    + ", ".join(f"{v} {best[v].step_s * 1e3:.1f} ms" for v in VARIANTS),
                    file=sys.stderr,
                    flush=True,
                )
            summary.append(summary_row(size, best, load_seconds, ns.steps))
            per_variant.extend(variant_row(size, v, best[v], ns) for v in VARIANTS)
    print(
        "| model | TRL sigmoid, precomputed ref (ms/step) | dpo candidate, cached ref (ms/step) | (a) ratio | "
        "TRL sigmoid, per-step ref (ms/step) | (b) speed-up | ref cache load (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    print(
        f"\nPer variant (best round; tokens = non-padding prompt + completion tokens of chosen and rejected per step; "
        f"GFLOP/token = 4N + 6N_lora, + 2N with a per-step reference forward; MFU against {ns.peak_tflops:g} TFLOP/s; "
        f"tokens/s per {'CPU-' if ns.clock == 'cpu' else 'wall-clock '}second):\n"
    )
    print("| model | variant | ms/step | tokens/step | tokens/s | GFLOP/token | MFU | peak mem (GiB) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(per_variant), flush=True)


if __name__ == "__main__":
    main()
