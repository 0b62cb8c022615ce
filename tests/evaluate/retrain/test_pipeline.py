"""`lossforge retrain`: real `accelerate launch` runs on CPU (gloo) of the lora recipe, shortened, on a tiny Llama.

Three launches in all (they cost start-up, so each test asserts much): a 2-process run of a batch-coupled
candidate read from a run's archive (RUN:ID) with the dpo baseline, on a standard JSONL file without a
test split; a 1-process run on a conversational dataset with a test split, graded by a judge on loopback
and by lm-eval on a local task. Bad input is refused before anything is launched, with one line and exit 2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
import typer
from lossforge.candidates import load_library
from lossforge.discovery.commands import retrain
from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.retrain.data import load_splits
from lossforge.evaluate.tasks.hf import TIE_TOLERANCE, completion_logps, encode_pair
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from tests.openai_server import OpenAIServer, Reply
from tests.paths import ROOT
from tests.retrain_launches import CLI, SHORT, SHORT_FULL, kill_processes_mentioning
from tests.tiny_hf import build_tiny_model, conversational_rows, standard_rows, write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lossforge(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own. Past ``timeout`` it is killed, and so is every process of its launch
    (ranks lead sessions of their own; killing the CLI alone would leave them running), found by ``--out``."""
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        if "--out" in args:
            kill_processes_mentioning(args[args.index("--out") + 1])
        stdout, stderr = process.communicate()
        pytest.fail(f"lossforge {' '.join(args[:2])} ran past {timeout} s; stderr:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retrain")
    run = root / "run"
    with Archive.open(run) as archive:
        archive.add_candidate(
            generation=1,
            idx=0,
            name="kto_like",
            code=load_library()["kto_pair"].source,
            thought="KTO's batch-mean reference point",
            status="ok",
            score=0.5,
            parents=[3],
        )
    conversational = root / "conversational"
    rows = conversational_rows(16)
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:12]), "test": datasets.Dataset.from_list(rows[12:])}
    ).save_to_disk(str(conversational))
    return {
        "model": build_tiny_model(root / "model"),
        "standard": write_jsonl(root / "pairs.jsonl", standard_rows(20)),
        "conversational": conversational,
        "run": run,
        "root": root,
    }


@pytest.fixture(scope="module")
def two_process_run(inputs: dict[str, Path]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = inputs["root"] / "out-ddp"
    completed = _lossforge(
        "retrain",
        f"{inputs['run']}:1",
        "--model",
        str(inputs["model"]),
        "--dataset",
        str(inputs["standard"]),
        "--num-processes",
        "2",
        "--test-fraction",
        "0.2",
        "--baseline",
        "dpo",
        "--out",
        str(out),
        "--json",
        *SHORT,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return out, completed


def test_two_cpu_processes_over_gloo_both_train(two_process_run: tuple[Path, Any]) -> None:
    out, completed = two_process_run
    for rank in (0, 1):  # each rank logs itself, when it starts and when it has trained
        assert f"[rank {rank}/2] starting" in completed.stderr
        assert f"[rank {rank}/2] finished: 2 optimizer steps on this rank" in completed.stderr
        assert f"[rank {rank}/2] process group destroyed" in completed.stderr
    training = json.loads((out / "train_log.json").read_text())
    assert training["world_size"] == 2 and training["steps_per_rank"] == [2, 2]
    assert training["process_group_timeout"] == "600 s"  # not torch's 30 minutes: a lost rank fails in minutes
    assert training["distributed"] == "MULTI_CPU over gloo with 2 process(es)"
    assert training["precision"].startswith("fp32") and training["gradient_checkpointing"] == "on"
    assert "adamw_torch" in training["optimizer"]
    # TRL's progress bar and step logs come from the main process only: one bar, one log line per step.
    launch_log = (out / "train.log").read_text()
    assert launch_log.count(" 0/2 [") == 1 and launch_log.count("'loss':") == 2
    assert "'loss':" not in completed.stderr  # the console keeps a short progress; the log has everything
    # Nor the libraries' own noise: weight-loading bars and deprecation warnings (issue 21).
    assert "Loading weights" not in completed.stderr and "Warning:" not in completed.stderr, completed.stderr
    # Each rank locked itself down before the loss first ran (the static policy was on: a library loss).
    for rank in (0, 1):
        assert f"[rank {rank}/2] protections before the loss first runs: rlimit_core on, audit_hook on" in launch_log
    protections = json.loads(completed.stdout)["protections"]
    assert protections["static_policy"] == "on" and protections["rank"]["audit_hook"] == "on"
    # The log says which optimizer trained, and why not the recipe's.
    assert "optimizer: adamw_torch (plain AdamW) instead of the recipe's paged_adamw_32bit" in completed.stderr


def test_outputs_are_flat_and_metrics_json_has_the_compare_shape(two_process_run: tuple[Path, Any]) -> None:
    out, completed = two_process_run
    document = json.loads(completed.stdout)  # --json: stdout is exactly metrics.json's content
    assert document == json.loads((out / "metrics.json").read_text())
    for name in ("adapter_model.safetensors", "loss.py", "recipe.yaml", "metrics.json", "README.md"):
        assert (out / name).is_file(), name
    assert document["kind"] == "retrain" and document["candidate"] == "kto_like" and document["recipe"] == "lora"
    assert document["model"] == str(out.parent / "model") and document["baseline"] == "baseline"
    assert all(isinstance(v, float) for v in document["metrics"].values())
    assert (out / "loss.py").read_text().count("def loss(") == 1
    # kto_pair couples the pairs of a batch: 2 processes change its batch statistics, and the user is told.
    assert document["batch_coupled"] is True
    assert any("couples the pairs of a batch" in w for w in document["warnings"])
    assert "couples the pairs of a batch" in completed.stderr
    card = (out / "README.md").read_text()  # ours, not TRL's or PEFT's
    assert "KTO's batch-mean reference point" in card and "lossforge" in card and "Model Card for" not in card
    assert "| metric | this model | dpo (baseline) | difference |" in card
    recipe = (out / "recipe.yaml").read_text()
    assert "max_steps: 2" in recipe and "optim: adamw_torch" in recipe


def test_dpo_baseline_trains_on_the_same_recipe_data_and_seed(two_process_run: tuple[Path, Any]) -> None:
    out, _ = two_process_run
    mine, base = (json.loads((d / "metrics.json").read_text()) for d in (out, out / "baseline"))
    assert base["candidate"] == "dpo" and base["baseline"] is None and base["kind"] == "retrain"
    assert (out / "baseline" / "adapter_model.safetensors").is_file()
    assert (out / "recipe.yaml").read_text() == (out / "baseline" / "recipe.yaml").read_text()
    assert mine["held_out"] == base["held_out"] and mine["seed"] == base["seed"]
    assert mine["metrics"]["n_eval"] == base["metrics"]["n_eval"] == 4.0
    # Different losses trained on the same batches: the first step's losses differ only by the loss.
    logs = [json.loads((d / "train_log.json").read_text()) for d in (out, out / "baseline")]
    # Same seed, same data order: the first step sees the same pairs from the same initial policy.
    assert logs[0]["log_history"][0]["logps/chosen"] == logs[1]["log_history"][0]["logps/chosen"]
    assert logs[0]["log_history"][0]["logps/rejected"] == logs[1]["log_history"][0]["logps/rejected"]
    first = [log["step_losses"][0] for log in logs]
    assert first[1] == pytest.approx(0.6931, abs=1e-3)  # DPO at policy == reference: ln 2
    assert first[0] != pytest.approx(first[1])


def test_carved_split_is_said_and_the_adapter_reproduces_the_accuracy(
    two_process_run: tuple[Path, Any], inputs: dict[str, Path]
) -> None:
    out, completed = two_process_run
    document = json.loads(completed.stdout)
    assert document["held_out_carved"] is True
    assert "has no 'test' split, so 4 of its 20 'train' pairs (20%) were carved out with seed 0" in document["held_out"]
    assert document["held_out"] in completed.stdout
    # Load the adapter back and score the held-out pairs against the base model (adapter disabled).
    held_out = load_splits(str(inputs["standard"]), test_fraction=0.2).test
    tokenizer = AutoTokenizer.from_pretrained(out)
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(inputs["model"], dtype=torch.float32), out)
    encoded = [encode_pair(tokenizer, row, 32) for row in held_out]
    trained = completion_logps(policy.eval(), tokenizer, encoded, batch_size=8)  # (N, 2)
    with policy.disable_adapter():
        reference = completion_logps(policy, tokenizer, encoded, batch_size=8)
    margins = (trained - reference)[:, 0] - (trained - reference)[:, 1]
    assert margins.abs().min() > TIE_TOLERANCE  # trained: no ties, so accuracy is a plain count
    assert document["metrics"]["pref_accuracy"] == pytest.approx(float((margins > 0).double().mean()))
    assert document["metrics"]["margin"] == pytest.approx(float(margins.mean()), rel=1e-6)


HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


@pytest.fixture(scope="module")
def chat_run(inputs: dict[str, Path]) -> Iterator[tuple[Path, OpenAIServer, subprocess.CompletedProcess[str]]]:
    """One process of the full recipe on a conversational dataset with a test split, graded by the judge on
    loopback and by lm-eval when installed."""
    root = inputs["root"]
    questions = write_jsonl(
        root / "questions.jsonl",
        [{"question_id": 1, "turns": ["what is a"]}, {"question_id": 2, "turns": ["question one"]}],
    )
    tasks = root / "tasks"
    tasks.mkdir()
    rows = write_jsonl(
        root / "mc.jsonl",
        [{"question": "what is a", "choices": ["fine answer", "poor answer"], "label": i % 2} for i in range(4)],
    )
    (tasks / "tiny_pref.yaml").write_text(
        f"task: tiny_pref\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {rows}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    lm_eval = ["--lm-eval", "tiny_pref:0", "--lm-eval-include", str(tasks)] if HAS_LM_EVAL else []
    out = root / "out-chat"
    with OpenAIServer(default=Reply("Clear enough. Rating: [[7]]")) as server:
        completed = _lossforge(
            "retrain",
            "ipo",
            "--model",
            str(inputs["model"]),
            "--dataset",
            str(inputs["conversational"]),
            "--out",
            str(out),
            "--judge",
            str(questions),
            "--judge-model",
            "judge-model",
            "--judge-base-url",
            server.base_url,
            "--judge-option",
            "judge_api_key_env=JUDGE_KEY",
            "--judge-option",
            "max_new_tokens=4",
            *lm_eval,
            *SHORT_FULL,
            env={"JUDGE_KEY": "sk-judge"},
        )
        assert completed.returncode == 0, completed.stderr[-4000:]
        yield out, server, completed


def test_conversational_dataset_with_its_test_split_and_the_judge(chat_run: tuple[Path, Any, Any]) -> None:
    out, server, completed = chat_run
    document = json.loads((out / "metrics.json").read_text())
    assert document["held_out_carved"] is False
    assert document["held_out"] == "held-out pairs: the dataset's 'test' split (4 pairs)"
    assert document["metrics"]["n_eval"] == 4.0 and document["candidate"] == "ipo"
    assert document["metrics"]["judge_score"] == 7.0 and document["metrics"]["n_judged"] == 2.0
    assert len(server.chat_requests) == 2  # one grade per answer, through the OpenAI-compatible client
    assert all(r.headers.get("authorization") == "Bearer sk-judge" for r in server.requests)
    assert "what is a" in server.chat_requests[0]["messages"][0]["content"]  # the question, with the answer
    assert "[rank 0/1] finished: 2 optimizer steps" in completed.stderr
    card = (out / "README.md").read_text()
    assert "A fully fine-tuned model" in card and "library_name: transformers" in card
    assert "## Evaluation" in card and "judge_score" in card and "the dataset's 'test' split" in card


def test_full_recipe_saves_the_whole_model_trained_in_fp32_weights_under_bf16(
    chat_run: tuple[Path, Any, Any], inputs: dict[str, Path]
) -> None:
    out, _, _ = chat_run
    assert (out / "model.safetensors").is_file() and not (out / "adapter_model.safetensors").exists()
    training = json.loads((out / "train_log.json").read_text())
    assert training["precision"] == "bf16 (mixed precision: bf16)" and training["weights_dtype"] == "float32"
    assert json.loads((out / "metrics.json").read_text())["recipe"] == "full"
    trained = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(inputs["model"], dtype=torch.float32)
    changed = [
        name
        for (name, p), q in zip(trained.named_parameters(), base.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert len(changed) > len(list(base.parameters())) // 2  # every weight trains, not an adapter


@pytest.mark.skipif(not HAS_LM_EVAL, reason='lm-eval is not installed (pip install "lossforge[lm-eval]")')
def test_lm_eval_on_a_small_local_task(chat_run: tuple[Path, Any, Any]) -> None:
    out, _, _ = chat_run
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    # Four copies of one question with the same two choices and alternating labels: whichever choice the model
    # prefers, it is right on exactly two of them.
    assert metrics["lm_eval/tiny_pref/acc"] == 0.5
    assert not [name for name in metrics if name.startswith("lm_eval/") and "tiny_pref" not in name]


# --- bad input: one line, exit 2, nothing launched ----------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    retrain.register(app)
    return app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "learning_rat=0.1"], "unknown field 'learning_rat' (did you mean 'learning_rate'?)"),
        (["--set", "lora.rank=8"], "unknown field 'lora.rank'"),
        (["--model", "{root}/no-such-model"], "no-such-model' not found"),
        (["--dataset", "{root}/columns.jsonl"], "has no 'chosen' or 'rejected' column"),
        (["--num-processes", "64"], "--num-processes 64 is more than the"),
        (["--recipe", "full", "--set", "effective_batch_size=7"], "effective_batch_size 7 is not a multiple"),
        (["--report-to", "mlflow"], "--report-to must be one of none, tensorboard, wandb, trackio"),
        (["--lm-eval", "tiny:x"], "--lm-eval takes TASK or TASK:SHOTS"),
        (["--set", "loss_type=[ipo]"], "CandidateDPOTrainer does not support loss_type=['ipo']"),
        (["--accelerate-config", "{root}/fsdp.yaml"], "fsdp.yaml not found"),
        (["--model", "{root}/plain-model", "--dataset", "{root}/conversational"], "tokenizer has no chat template"),
        (["--judge", "{root}/questions-missing.jsonl", "--judge-model", "m"], "questions file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_launch(inputs: dict[str, Path], args: list[str], message: str) -> None:
    root = inputs["root"]
    write_jsonl(root / "columns.jsonl", [{"prompt": "a", "answer": "b"}])
    plain = root / "plain-model"  # the tiny model, its tokenizer without a chat template
    if not plain.exists():
        shutil.copytree(inputs["model"], plain)
        (plain / "chat_template.jinja").unlink()
    out = root / "never"
    base = ["retrain", "dpo", "--model", str(inputs["model"]), "--dataset", str(inputs["standard"]), "--out", str(out)]
    given = [a.format(root=root) for a in args]
    for flag in ("--model", "--dataset"):  # a given flag replaces the default one
        if flag in given:
            index = base.index(flag)
            del base[index : index + 2]
    result = CliRunner().invoke(_app(), [*base, *given])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not out.exists()  # nothing was launched or written


def test_missing_model_flag_and_rejected_candidate(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["retrain", "dpo", "--dataset", str(inputs["standard"])])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --model is required"
    bad = tmp_path / "mean_loss.py"
    bad.write_text("import torch\n\n\ndef loss(pc, pr, rc, rr, beta):\n    return (pr - pc).mean()\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        _app(),
        [
            "retrain",
            str(bad),
            "--model",
            str(inputs["model"]),
            "--dataset",
            str(inputs["standard"]),
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 1 and "the checker rejects mean_loss at stage sandbox" in result.stderr
    assert json.loads(result.stdout)["status"] == "rejected"  # --json: one object on stdout whatever happens
    assert not out.exists()


def test_run_candidates_that_do_not_exist_are_usage_errors(inputs: dict[str, Path]) -> None:
    base = ["--model", str(inputs["model"]), "--dataset", str(inputs["standard"])]
    for candidate, message in (
        (f"{inputs['run']}:99", f"run {inputs['run']} has no candidate 99"),
        (f"{inputs['root']}/nowhere:1", "is not a run directory (no archive.sqlite)"),
        ("no_such_loss", "unknown candidate 'no_such_loss'"),
    ):
        result = CliRunner().invoke(_app(), ["retrain", candidate, *base])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (inputs["root"] / "nowhere").exists()  # reading a run never creates one


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_tracker_that_is_not_installed_is_refused_before_launch(inputs: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        _app(),
        [
            "retrain",
            "dpo",
            "--model",
            str(inputs["model"]),
            "--dataset",
            str(inputs["standard"]),
            "--report-to",
            "wandb",
        ],
    )
    assert result.exit_code == 2
    expected = "--report-to wandb needs the wandb package, which is not installed (pip install wandb)"
    assert result.stderr.strip().endswith(expected)
