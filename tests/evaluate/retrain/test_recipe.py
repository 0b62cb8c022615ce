"""Retrain recipes, the accelerate command line, device limits, lm-eval task parsing and the model card's
escaping (no launch here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from lossforge.evaluate.config_error import ConfigError
from lossforge.evaluate.retrain import devices
from lossforge.evaluate.retrain.harness import OPENLLM_V1, parse_tasks
from lossforge.evaluate.retrain.launcher import ENTRY_MODULE, plan_launch
from lossforge.evaluate.retrain.model_card import render
from lossforge.evaluate.retrain.recipe import build_configs, load_recipe, recipes_dir


def test_lora_recipe_is_the_reference_lora_dpo_settings() -> None:
    recipe = load_recipe("lora")
    assert recipe.lora == {
        "r": 16,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    }
    expected = {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "activation_checkpointing": True,
        "learning_rate": 5e-5,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 100,
        "max_steps": 200,
        "optim": "paged_adamw_32bit",
        "beta": 0.1,
        "max_length": 1536,
    }
    assert {key: recipe.training[key] for key in expected} == expected
    assert recipe.gradient_accumulation(num_processes=8) == 4  # given directly: independent of the processes


def test_full_recipe_is_discopop_zephyr_run_with_zero3(tmp_path: Path) -> None:
    recipe = load_recipe("full")
    assert recipe.lora is None and recipe.effective_batch_size == 128
    expected = {
        "bf16": True,
        "learning_rate": 5e-7,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,
        "num_train_epochs": 2,
        "beta": 0.05,
        "max_length": 1024,
    }
    assert {key: recipe.training[key] for key in expected} == expected
    # 2 per device x 8 GPUs x 8 accumulation steps = 128
    assert recipe.gradient_accumulation(8) == 8 and recipe.gradient_accumulation(1) == 64
    with pytest.raises(ConfigError, match="effective_batch_size 128 is not a multiple of .* = 6"):
        recipe.gradient_accumulation(3)
    zero3 = yaml.safe_load(recipe.accelerate_config.read_text())  # type: ignore[union-attr]
    assert zero3["distributed_type"] == "DEEPSPEED" and zero3["deepspeed_config"]["zero_stage"] == 3
    assert recipe.accelerate_config.parent == recipes_dir()  # type: ignore[union-attr]


def test_overrides_are_yaml_values_with_dotted_lora_keys() -> None:
    recipe = load_recipe("lora", ["max_steps=3", "learning_rate=1e-4", "lora.r=8", "lora.target_modules=[q_proj]"])
    assert recipe.training["max_steps"] == 3 and recipe.training["learning_rate"] == pytest.approx(1e-4)
    assert recipe.lora is not None and recipe.lora["r"] == 8 and recipe.lora["target_modules"] == ["q_proj"]
    assert load_recipe("lora", ["lora=null"]).lora is None  # full fine-tuning
    resolved = recipe.resolved(num_processes=2)
    assert resolved["overrides"] == ["max_steps=3", "learning_rate=1e-4", "lora.r=8", "lora.target_modules=[q_proj]"]


def test_every_problem_is_reported_with_the_valid_fields() -> None:
    with pytest.raises(ConfigError) as caught:
        load_recipe("lora", ["learning_rat=1", "lora.rank=8", "output_dir=/tmp/x", "bad"])
    problems = caught.value.problems
    assert len(problems) == 4
    assert "unknown field 'learning_rat' (did you mean 'learning_rate'?)" in problems[1]
    assert "max_steps" in problems[1]  # the valid fields are listed
    assert "unknown field 'lora.rank'" in problems[3] and "lora_alpha" in problems[3]
    assert "recipe field 'output_dir' is set by the command; use --out" in problems[2]
    assert problems[0].startswith("--set takes KEY=VALUE")


def test_effective_batch_size_conflicts_with_explicit_accumulation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="effective_batch_size and gradient_accumulation_steps are both set"):
        load_recipe("full", ["gradient_accumulation_steps=2"])
    custom = tmp_path / "mine.yaml"
    custom.write_text("per_device_train_batch_size: 3\neffective_batch_size: 12\nmax_steps: 5\n")
    assert load_recipe(str(custom)).gradient_accumulation(2) == 2
    with pytest.raises(ConfigError, match="neither a shipped recipe"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_dpo_config_refuses_bad_values_before_launch(tmp_path: Path) -> None:
    recipe = load_recipe("lora", ["lr_scheduler_type=sideways"])
    with pytest.raises(ConfigError, match="DPOConfig refuses the recipe"):
        build_configs(recipe, num_processes=1, output_dir=str(tmp_path), use_cpu=True, report_to="none")


def test_cpu_multi_process_launch_is_ddp_over_gloo_not_the_single_process_cpu_flag() -> None:
    plan = plan_launch(["--out", "o"], num_processes=2, gpus=0, cores=2, accelerate_config=None)
    assert plan.argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in plan.argv and "--cpu" not in plan.argv
    assert plan.env["ACCELERATE_USE_CPU"] == "true"
    assert plan.argv[plan.argv.index("--num_processes") + 1] == "2"
    assert plan.argv[plan.argv.index("--num_cpu_threads_per_process") + 1] == "1"
    assert plan.argv[-4:] == ["--module", ENTRY_MODULE, "--out", "o"]
    single = plan_launch([], num_processes=1, gpus=0, cores=2, accelerate_config=None)
    assert "--cpu" in single.argv and "ACCELERATE_USE_CPU" not in single.env


def test_gpu_launch_uses_the_accelerate_config_when_given(tmp_path: Path) -> None:
    config = tmp_path / "fsdp.yaml"
    plan = plan_launch([], num_processes=4, gpus=8, cores=64, accelerate_config=config)
    assert plan.argv[plan.argv.index("--config_file") + 1] == str(config) and "--multi_gpu" not in plan.argv
    ddp = plan_launch([], num_processes=4, gpus=8, cores=64, accelerate_config=None)
    assert "--multi_gpu" in ddp.argv and "ACCELERATE_USE_CPU" not in ddp.env


def test_process_count_limits() -> None:
    assert devices.process_count_problem(2, gpus=0, cores=2) is None
    assert "more than the 2 CPU core(s)" in (devices.process_count_problem(3, gpus=0, cores=2) or "")
    assert "more than the 4 visible GPU(s)" in (devices.process_count_problem(5, gpus=4, cores=64) or "")
    assert devices.process_count_problem(4, gpus=4, cores=1) is None  # GPUs, not cores, bound a GPU launch


def test_paged_adamw_falls_back_to_plain_adamw_without_cuda_and_says_so() -> None:
    optimizer, note = devices.choose_optimizer("paged_adamw_32bit", on_cuda=False)
    assert optimizer == "adamw_torch" and "needs CUDA and bitsandbytes" in note and "CUDA" in note.split("here:")[1]
    assert devices.choose_optimizer("adamw_torch", on_cuda=False) == ("adamw_torch", "optimizer: adamw_torch")


def test_tracker_problems() -> None:
    assert devices.tracker_problem("none") is None
    assert "must be one of none, tensorboard, wandb, trackio" in (devices.tracker_problem("mlflow") or "")


def test_lm_eval_task_lists() -> None:
    assert parse_tasks("openllm-v1") == OPENLLM_V1
    assert OPENLLM_V1 == {
        "arc_challenge": 25,
        "hellaswag": 10,
        "mmlu": 5,
        "truthfulqa_mc2": 0,
        "winogrande": 5,
        "gsm8k": 5,
    }
    assert parse_tasks("arc_easy:5, piqa") == {"arc_easy": 5, "piqa": None}
    with pytest.raises(ConfigError, match="TASK:SHOTS"):
        parse_tasks("arc_easy:five")


def test_default_timeout_follows_the_recipe() -> None:
    assert load_recipe("lora", ["max_steps=2"]).default_timeout_s() == 3600 + 2 * 300
    assert load_recipe("lora").default_timeout_s() == 3600 + 200 * 300
    assert load_recipe("full").default_timeout_s() == 24 * 3600  # trains by epochs
    assert load_recipe("lora", ["max_steps=100000"]).default_timeout_s() == 24 * 3600


HOSTILE_TEXT = (
    "Looks fine.</details><script>alert(1)</script>\n![x](http://evil/)\n# Owned\n```\n<img src=x onerror=alert(1)>"
    "\n[click](javascript:alert(1))\n---\n- listed"
)


def test_model_card_renders_candidate_text_inert() -> None:
    """Every candidate-controlled field (NAME, DESCRIPTION, ORIGIN, PARENTS, the code) of a hostile candidate:
    the rendered card holds no HTML, image, link, heading or code block but the card's own."""
    markdown_it = pytest.importorskip("markdown_it")
    source = 'NAME = "x"\n\n\ndef loss(a, b, c, d, beta):\n    """````\n```\n# not a heading"""\n    return a\n'
    document = {
        "candidate": "evil</details>`name`",
        "model": "m",
        "dataset": "d",
        "metrics": {"pref_accuracy": 0.5},
        "held_out": "held-out pairs: 4",
        "warnings": [f"evil couples pairs {HOSTILE_TEXT}"],
        "protections": {"static_policy": "on", "rank": {"audit_hook": "on"}},
    }
    meta = {
        "NAME": "evil</details>`name`",
        "DESCRIPTION": HOSTILE_TEXT,
        "ORIGIN": HOSTILE_TEXT,
        "PARENTS": ["1", "<b>2</b>"],
    }
    card = render(document, loss_meta=meta, recipe={"recipe": "lora", "lora": None}, baseline=None, source=source)
    tokens = markdown_it.MarkdownIt("commonmark").parse(card)
    inline = [child for token in tokens for child in (token.children or [])]
    assert not [
        t
        for t in tokens + inline
        if t.type in ("html_block", "html_inline", "image", "link_open")
        and not (t.type == "link_open" and t.attrs.get("href") in ("loss.py", "recipe.yaml"))
    ]
    headings = [tokens[i + 1] for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert [h.content for h in headings[1:]] == ["The loss", "Training", "Protections", "Evaluation"]
    assert [c.type for c in headings[0].children or []] == ["code_inline", "text", "code_inline"]  # name on model
    fences = [t for t in tokens if t.type in ("fence", "code_block")]
    assert [t.info for t in fences] == ["python", "yaml"]
    assert fences[0].content == source  # the code verbatim, its backtick runs inside a longer fence
    html = markdown_it.MarkdownIt("commonmark").render(card)
    assert "<script" not in html and "<img" not in html and "</details>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # still readable as text
    assert "Looks fine." in card and "evil</details>" in card  # the name stays, inside a code span


def test_a_shortened_training_keeps_the_recipes_warm_up_share_and_says_so() -> None:
    # `--set max_steps=4` on the lora recipe (100 warm-up steps of 200) used to warm up for 100 steps: the learning
    # rate never reached its peak and the model barely moved, silently.
    assert load_recipe("lora").training["warmup_steps"] == 100 and not load_recipe("lora").notes
    short = load_recipe("lora", ["max_steps=4"])
    assert short.training["warmup_steps"] == 2 and short.training["max_steps"] == 4
    assert len(short.notes) == 1 and "warm-up: 2 of 4 steps, the recipe's share (100 of 200)" in short.notes[0]
    assert load_recipe("lora", ["max_steps=50"]).training["warmup_steps"] == 25
    assert load_recipe("lora", ["max_steps=500"]).training["warmup_steps"] == 100  # room enough: untouched
    chosen = load_recipe("lora", ["max_steps=4", "warmup_steps=100"])  # the user's explicit choice: kept, warned
    assert chosen.training["warmup_steps"] == 100
    assert (
        chosen.notes[0].startswith("warning: warmup_steps 100 >= max_steps 4")
        and "--set warmup_steps=" in chosen.notes[0]
    )
    assert not load_recipe("lora", ["max_steps=4", "warmup_steps=0.1"]).notes  # a ratio scales by itself
