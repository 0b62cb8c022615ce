"""`lossforge train`: exit codes, one JSON object on stdout and nothing else, usage errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from lossforge.discovery.commands import train
from typer.testing import CliRunner

from tests.paths import ROOT

TINY = "tests.tiny_task:TinyTask"

# The command registered on its own app, as `lossforge.discovery.cli` registers every subcommand module.
LAUNCHER = """
import sys, typer
from lossforge.discovery.commands import train
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.callback()(lambda: None)
train.register(app)
app(sys.argv[1:])
"""


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    train.register(app)
    return app


def _invoke(*args: str) -> object:
    return CliRunner().invoke(_app(), ["train", *args])


def test_json_run_prints_one_object_and_nothing_else_on_stdout() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            LAUNCHER,
            "train",
            "dpo",
            "--task",
            TINY,
            "--steps",
            "2",
            "--betas",
            "0.1,0.5",
            "--eval-samples",
            "4",
            "--threads",
            "1",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    payload = json.loads(completed.stdout)  # the whole of stdout is one JSON document
    assert completed.stdout.count("\n") == 1
    assert payload["status"] == "ok"
    assert set(payload["timings"]) >= {"reference", "training", "evaluation"}
    assert set(payload["per_beta"]) == {"0.1", "0.5"}
    assert payload["min_score"] == min(entry["score"] for entry in payload["per_beta"].values())
    assert "margin" in payload["metrics"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("dpo", "--task", TINY, "--beta", "0"), "beta must be > 0, got 0.0"),
        (("dpo", "--task", "nope"), "unknown task 'nope'"),
        (("dpo", "--task", TINY, "--betas", "0.1,x"), "--betas takes comma-separated numbers"),
        (("no_such_loss", "--task", TINY), "unknown candidate 'no_such_loss'"),
        (("missing_file.py", "--task", TINY), "missing_file.py: no such file"),
        (("dpo", "--task", "tests.tiny_task:Nope"), "cannot load task class"),
        (("dpo", "--task", "hf", "--dataset", "x.jsonl"), "needs option 'model'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_rejected_file_exits_1_and_still_prints_the_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nNAME = 'bad'\ndef loss(a, b, c, d, beta):\n    return os.system('true')\n")
    result = _invoke(str(bad), "--task", TINY, "--steps", "1", "--json")
    assert isinstance(result.exception, SystemExit), result.exception  # an exit code, not a crash
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["status"] == "rejected" and payload["error"]


def test_no_static_policy_skips_only_the_ast_screen(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nNAME = 'bad'\ndef loss(a, b, c, d, beta):\n    return os.system('true')\n")
    screened = json.loads(_invoke(str(bad), "--task", TINY, "--steps", "1", "--json").stdout)
    assert screened["status"] == "rejected" and "importing `os` is not allowed" in screened["error"]
    result = _invoke(str(bad), "--task", TINY, "--steps", "1", "--json", "--no-static-policy")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["status"] == "rejected"  # the sandboxed check still runs, and refuses the call
    assert "the sandbox refuses os.system" in payload["error"]


HF = "hf"


def test_bad_task_input_exits_2_with_the_task_message(tmp_path: Path) -> None:
    from tests.tiny_task import tiny_llama, tiny_tokenizer

    no_chosen = tmp_path / "pairs.jsonl"
    no_chosen.write_text("".join(json.dumps({"prompt": f"w{i}", "rejected": " bad"}) + "\n" for i in range(8)))
    missing_model = _invoke("dpo", "--task", HF, "--model", str(tmp_path / "nowhere"), "--dataset", str(no_chosen))
    assert missing_model.exit_code == 2, missing_model.stderr
    assert "nowhere" in missing_model.stderr and "Traceback" not in missing_model.stderr

    model_dir = tmp_path / "model"
    tiny_llama().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    missing_column = _invoke(
        "dpo", "--task", HF, "--model", str(model_dir), "--dataset", str(no_chosen), "--steps", "1"
    )
    assert missing_column.exit_code == 2, missing_column.stderr
    assert "chosen" in missing_column.stderr and "Traceback" not in missing_column.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sentiment", "arithmetic"])
def test_embedded_tasks_smoke(task: str) -> None:
    # Builds (and caches) the task's SFT reference on first use: minutes on a CPU, hence `slow`.
    result = _invoke("dpo", "--task", task, "--steps", "2", "--eval-samples", "8", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and payload["score"] is not None
