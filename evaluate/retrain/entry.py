"""The training entry point of a retrain: every rank of ``accelerate launch`` runs this module.

``python -m lossforge.evaluate.retrain.entry --out OUT --model M --dataset D [...]`` reads the resolved
recipe (``OUT/recipe.yaml``) and the loss (``OUT/loss.py``) that :mod:`lossforge.evaluate.retrain.pipeline`
wrote, and runs the recipe's three phases (torchtune's recipe lifecycle):

1. ``setup``: ``DPOConfig`` first (under DeepSpeed ZeRO-3 it must exist before the model is loaded, so the
   weights are partitioned as they load), the tokenizer and model, the training pairs
   (:func:`lossforge.evaluate.retrain.data.load_splits`, the same split the evaluation uses), and
   ``CandidateDPOTrainer`` -- TRL's ``DPOTrainer`` with the candidate as its loss, the engine the discovery
   trains with;
2. ``train``: ``trainer.train()``; TRL's progress bar and logs on the main process only; the model is saved
   flat in ``OUT`` (the adapter under LoRA, the whole model otherwise) with the tokenizer;
3. ``cleanup``: ``OUT/train_log.json`` from the main process, then the process group is destroyed (a rank
   that exits with it alive can crash at interpreter shutdown).

Trust: the loss source was checked by ``lossforge.evaluate.check`` (static policy and sandbox) before the
launch, and this process was started without secrets (``candidate_environment()``). It runs here without the
sandbox's network namespace and seccomp filter (a multi-GPU launch needs the sockets and devices they would
refuse); what does not break training is applied instead, on the loss's first call, before any of the
candidate's code runs (:mod:`lossforge.evaluate.retrain.lockdown`), and each rank logs which protections are
on. Each rank logs ``rank R/N`` when it starts and when it finishes, with the steps it took.

Ending: a rank leaves through ``os._exit`` once its work is done (``exit_now``), skipping the interpreter's
own clean-up. That clean-up hung: releasing the trainer after ``destroy_process_group`` (its DDP model still
holds the gloo process group, whose destructor waits in C++ on its peer) left both ranks alive after "process
group destroyed", and the launch with them -- seen 2 times in 14 two-process runs on a loaded machine, with a
``faulthandler`` dump showing every Python thread idle and the main thread inside ``sys.exit(main())``. A rank
that raises likewise stops at once after logging the traceback, so torch's launcher sees it fail and stops
the others instead of leaving them in a collective. ``ddp_timeout`` (the collectives' timeout) is
``DDP_TIMEOUT_S`` unless the recipe sets it, instead of torch's 30 minutes, so a rank whose peer is lost
fails within minutes; and a rank stops when ``lossforge retrain`` is gone (``watch_supervisor``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import yaml
from lossforge.evaluate.retrain.lockdown import DeferredLoss, apply_rank_protections, watch_supervisor
from transformers import TrainerCallback

log = logging.getLogger("lossforge.retrain")
DDP_TIMEOUT_S = 600  # seconds a collective waits for a lost rank (torch's default: 1800)
RECIPE_META_KEYS = ("recipe", "overrides", "effective_batch_size", "lora", "notes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lossforge.evaluate.retrain.entry")
    parser.add_argument("--out", required=True, help="output directory holding recipe.yaml and loss.py")
    parser.add_argument("--model", required=True, help="hub id, save_pretrained directory or .gguf file")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--report-to", default="none")
    return parser.parse_args(argv)


class StepCounter(TrainerCallback):
    """Counts and times this rank's optimizer steps: proof that every rank took part, and the step time."""

    def __init__(self) -> None:
        self.steps = 0
        self.step_seconds: list[float] = []
        self._started = time.perf_counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1
        self.step_seconds.append(time.perf_counter() - self._started)


def weights_dtype(config: Any, *, lora: bool) -> Any:
    """The dtype the weights load in. Under bf16/fp16 training, half precision where the trained weights have an
    fp32 master copy elsewhere -- LoRA (the frozen base is never updated; the adapter trains in fp32) or DeepSpeed
    (its optimizer keeps fp32 masters) -- and float32 otherwise: plain full fine-tuning in bf16 would round
    away updates below bf16's resolution (lr 5e-7 on weights ~1e-2 is below it), so it trains fp32 weights
    under bf16 autocast."""
    import torch

    half = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else None
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return half if half is not None and (lora or deepspeed) else torch.float32


def setup(args: argparse.Namespace) -> tuple[Any, StepCounter, dict[str, Any]]:
    import datasets
    import torch
    from lossforge.evaluate.model_source import resolve_model
    from lossforge.evaluate.retrain.data import load_splits
    from lossforge.evaluate.training.candidate_trainer import CandidateDPOTrainer, use_pytorch_kernels
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig

    out = Path(args.out)
    resolved = yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8"))
    fields = {"ddp_timeout": DDP_TIMEOUT_S, **{k: v for k, v in resolved.items() if k not in RECIPE_META_KEYS}}
    if fields.get("dataloader_num_workers"):  # no worker process may start once the loss runs (lockdown)
        fields.setdefault("dataloader_persistent_workers", True)
    on_cuda = torch.cuda.is_available()
    if not on_cuda:
        start_cpu_process_group(int(fields["ddp_timeout"]))
    config = DPOConfig(output_dir=str(out / "checkpoints"), use_cpu=not on_cuda, report_to=args.report_to, **fields)
    set_seed(config.seed)
    # The pipeline passes the resolved location, so this is a no-op there; run directly with a .gguf file,
    # the ranks convert it once between them (model_source locks the conversion).
    model_path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:  # TRL pads with it; many causal LMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    dtype = weights_dtype(config, lora=resolved.get("lora") is not None)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    splits = load_splits(
        args.dataset, train_split=args.train_split, test_split=args.test_split, test_fraction=args.test_fraction
    )
    lora = LoraConfig(**resolved["lora"]) if resolved.get("lora") is not None else None
    counter = StepCounter()
    # The lock-down refuses new processes, and a Triton kernel compiled after it (the fused LM head's backward
    # compiles at the first backward pass, after the candidate's first call) runs ptxas in one.
    use_pytorch_kernels()
    trainer = CandidateDPOTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list(splits.train),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[counter],
        loss_fn=DeferredLoss((out / "loss.py").read_text(encoding="utf-8"), lambda: lock_down(out)),
    )
    return trainer, counter, {"train_pairs": len(splits.train)}


def start_cpu_process_group(timeout_s: int) -> None:
    """Start the gloo process group with the recipe's ``ddp_timeout``. On GPUs ``TrainingArguments`` passes it
    on; on CPU it does not (transformers 5), which would leave gloo's collectives at 30 minutes. The state
    ``DPOConfig`` creates next reuses the process group started here."""
    from datetime import timedelta

    from accelerate import PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        PartialState(cpu=True, timeout=timedelta(seconds=timeout_s))


def process_group_timeout(device: Any, asked_s: int) -> str:
    """The timeout the process group's collectives really have (read back from the backend, through torch's
    private API: what was asked for is not always what was set), or what was asked for where it cannot be read."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return "none (a single process)"
    try:
        backend = dist.distributed_c10d._get_default_group()._get_backend(device)
        return f"{backend.options._timeout.total_seconds():g} s"
    except (AttributeError, RuntimeError):
        return f"{asked_s} s (asked for; not readable from this backend)"


def lock_down(out: Path) -> dict[str, str]:
    """Apply the rank's protections (the loss is about to run for the first time) and log which are on."""
    report = apply_rank_protections(out)
    log.info("protections before the loss first runs: %s", ", ".join(f"{k} {v}" for k, v in report.items()))
    return report


def describe(trainer: Any) -> dict[str, str]:
    """What actually trains: optimizer, precision, gradient checkpointing, distributed backend."""
    args, state = trainer.args, trainer.accelerator.state
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # inside accelerate's wrapper
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    model = trainer.accelerator.unwrap_model(trainer.model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under PEFT's wrapper
    # transformers 5 renamed gradient checkpointing to activation checkpointing; the old name warns.
    name = (
        "is_activation_checkpointing"
        if hasattr(type(base), "is_activation_checkpointing")
        else "is_gradient_checkpointing"
    )
    checkpointing = bool(getattr(base, name, False))
    backend = str(state.backend or "none")
    return {
        "optimizer": f"{args.optim.value if hasattr(args.optim, 'value') else args.optim}"
        + (f" ({type(optimizer).__module__}.{type(optimizer).__name__})" if optimizer is not None else ""),
        "precision": f"{precision} (mixed precision: {trainer.accelerator.mixed_precision})",
        "gradient_checkpointing": "on" if checkpointing else "off",
        "distributed": f"{state.distributed_type.value} over {backend} with {state.num_processes} process(es)",
        "device": str(trainer.accelerator.device),
        "weights_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "process_group_timeout": process_group_timeout(trainer.accelerator.device, args.ddp_timeout),
    }


def train(trainer: Any, counter: StepCounter, info: dict[str, Any], out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    described = describe(trainer)
    if trainer.accelerator.is_main_process:
        for key, value in described.items():
            log.info("%s: %s", key.replace("_", " "), value)
    trainer.save_model(str(out))  # every rank takes part (ZeRO-3 gathers the weights); the main one writes
    history = [row for row in trainer.state.log_history if "loss" in row and "train_runtime" not in row]
    tokens = int(trainer._total_train_tokens) if hasattr(trainer, "_total_train_tokens") else 0
    steps = counter.step_seconds[1:] or counter.step_seconds  # the first step pays for compilation and warm-up
    return {
        **info,
        **described,
        "global_steps": int(trainer.state.global_step),
        "train_seconds": seconds,
        "step_seconds_mean": sum(steps) / len(steps) if steps else 0.0,
        "train_tokens": tokens,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "step_losses": list(trainer.step_losses),
        "rank_protections": dict(getattr(trainer.loss_fn, "protections", {})),
        "log_history": history,
    }


def cleanup(trainer: Any, summary: dict[str, Any], counter: StepCounter, out: Path) -> None:
    import torch
    import torch.distributed as dist

    state = trainer.accelerator.state
    steps = torch.tensor([counter.steps], device=trainer.accelerator.device)
    per_rank = trainer.accelerator.gather(steps).tolist()  # every rank's step count, on every rank
    if torch.cuda.is_available():
        summary["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if trainer.accelerator.is_main_process:
        summary.update(world_size=state.num_processes, steps_per_rank=per_rank)
        (out / "train_log.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    log.info("finished: %d optimizer steps on this rank", counter.steps)
    trainer.accelerator.wait_for_everyone()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        log.info("process group destroyed")


def exit_now(code: int) -> NoReturn:
    """End this rank with ``code`` without the interpreter's clean-up (see the module docstring). What that
    clean-up would have finished is finished here: a W&B run (its ``atexit`` hook would upload the rest), the
    logs and the standard streams (the output is ``train.log``)."""
    wandb = sys.modules.get("wandb")
    if code == 0 and wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish()
        except Exception as exc:  # noqa: BLE001 - the training is done and saved; a tracker's failure is reported
            log.warning("finishing the W&B run failed: %s", exc)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    args = parse_args(argv)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"[rank {rank}/{world}] %(message)s")
    log.info("starting (pid %d)", os.getpid())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    try:
        watched = watch_supervisor()
        trainer, counter, info = setup(args)
        summary = train(trainer, counter, info, out)
        summary["rank_protections"]["supervisor_watch"] = watched
        cleanup(trainer, summary, counter, out)
    except BaseException:  # any failure stops this rank at once; see the module docstring
        log.exception("failed; stopping this rank now so that the other ranks are stopped too")
        exit_now(1)
    exit_now(0)


if __name__ == "__main__":
    main()
