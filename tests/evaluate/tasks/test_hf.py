"""The hf task on a tiny Llama saved with save_pretrained and local JSONL/Parquet preference data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.hf import HFTask, completion_logps, encode_pair

from tests.tiny_hf import build_tiny_model, conversational_rows, nudge, standard_rows, write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def make_task(model: Path, dataset: Path, **options: Any) -> HFTask:
    return HFTask({"model": str(model), "dataset": str(dataset), **options})


def test_untrained_policy_scores_chance_with_ties(tiny_model: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    task = make_task(tiny_model, write_jsonl(tmp_path / "pairs.jsonl", standard_rows()), eval_fraction=0.3)
    model, tokenizer = task.reference()
    policy = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    result = task.score(policy, tokenizer, seed=0)
    # LoRA starts as the identity: every margin is exactly 0, a tie, counted 0.5.
    assert result.score == 0.5 and result.metrics["pref_accuracy"] == 0.5
    assert result.metrics["margin"] == 0.0 and result.metrics["n_eval"] == 3.0


def test_trained_towards_chosen_wins_and_towards_rejected_loses(tiny_model: Path, tmp_path: Path) -> None:
    task = make_task(tiny_model, write_jsonl(tmp_path / "pairs.jsonl", standard_rows()), eval_fraction=0.3)
    towards_chosen, tokenizer = task.reference()
    nudge(towards_chosen, tokenizer, [r["prompt"] + r["chosen"] for r in standard_rows()])
    good = task.score(towards_chosen, tokenizer, seed=0)  # not a PEFT model: the reference is reloaded
    assert good.score == 1.0 and good.metrics["margin"] > 0 and good.metrics["chosen_logratio"] > 0
    towards_rejected, _ = task.reference()
    nudge(towards_rejected, tokenizer, [r["prompt"] + r["rejected"] for r in standard_rows()])
    bad = task.score(towards_rejected, tokenizer, seed=0)
    assert bad.score == 0.0 and bad.metrics["margin"] < 0


def test_completion_logps_match_unpadded_forward(tiny_model: Path, tmp_path: Path) -> None:
    task = make_task(tiny_model, write_jsonl(tmp_path / "pairs.jsonl", standard_rows()))
    model, tokenizer = task.reference()
    rows = [
        {"prompt": "a b c", "chosen": " good", "rejected": " bad bad bad"},
        {"prompt": "d", "chosen": " fine", "rejected": " poor"},
    ]
    encoded = [encode_pair(tokenizer, row, 64) for row in rows]
    assert encoded[0] == (
        tokenizer("a b c")["input_ids"],
        tokenizer(" good </s>", add_special_tokens=False)["input_ids"],
        tokenizer(" bad bad bad </s>", add_special_tokens=False)["input_ids"],
    )
    batched = completion_logps(model, tokenizer, encoded, batch_size=4)  # type: ignore[arg-type]
    for i, (prompt, chosen, _) in enumerate(encoded):  # type: ignore[misc]
        ids = torch.tensor([prompt + chosen])
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        expected = logps[torch.arange(len(prompt) - 1, ids.shape[1] - 1), ids[0, len(prompt) :]].sum()
        assert batched[i, 0].item() == pytest.approx(expected.item(), abs=1e-4)


def test_truncation_keeps_the_start_and_skips_full_prompts(tiny_model: Path, tmp_path: Path) -> None:
    task = make_task(tiny_model, write_jsonl(tmp_path / "pairs.jsonl", standard_rows()))
    _, tokenizer = task.reference()
    prompt, chosen, rejected = encode_pair(
        tokenizer, {"prompt": "a b", "chosen": " good good good", "rejected": " bad"}, 5
    )  # type: ignore[misc]
    assert len(prompt) == 3 and len(chosen) == 2 and len(rejected) == 2  # "<s> a b" + 2 of "good good good </s>"
    assert encode_pair(tokenizer, {"prompt": "a b c d e", "chosen": " x", "rejected": " y"}, 5) is None


def test_conversational_dataset(tiny_model: Path, tmp_path: Path) -> None:
    task = make_task(tiny_model, write_jsonl(tmp_path / "chat.jsonl", conversational_rows()), eval_fraction=0.25)
    data = task.preference_data()
    assert data.column_names == ["prompt", "chosen", "rejected"] and len(data) == 6
    assert data[0]["chosen"] == [{"role": "assistant", "content": "fine answer"}]
    model, tokenizer = task.reference()
    prompt, chosen, _ = encode_pair(tokenizer, task.eval_rows()[0], 64)  # type: ignore[misc]
    assert tokenizer.decode(prompt).endswith("<assistant>") and tokenizer.decode(chosen) == "fine answer </s>"
    nudge(model, tokenizer, ["<s> <user> what is a </s> <assistant> fine answer </s>"] * 2)
    assert task.score(model, tokenizer, seed=0).score == 1.0


def test_prompt_extracted_from_whole_conversations(tiny_model: Path, tmp_path: Path) -> None:
    rows = [
        {
            "chosen": [{"role": "user", "content": "question one"}, {"role": "assistant", "content": "fine"}],
            "rejected": [{"role": "user", "content": "question one"}, {"role": "assistant", "content": "poor"}],
        }
    ] * 4
    task = make_task(tiny_model, write_jsonl(tmp_path / "hh.jsonl", rows))
    first = task.preference_data()[0]
    assert first["prompt"] == [{"role": "user", "content": "question one"}]
    assert first["rejected"] == [{"role": "assistant", "content": "poor"}]


def test_parquet_split_and_eval_samples(tiny_model: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**row, "source": "extra column, dropped"} for row in standard_rows(12)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    task = HFTask(
        {"model": str(tiny_model), "dataset": str(tmp_path / "pairs.parquet"), "eval_fraction": 0.25}, eval_samples=2
    )
    data = task.preference_data()
    assert len(data) == 9 and data.column_names == ["prompt", "chosen", "rejected"]
    assert len(task.eval_rows()) == 2
    held_out = {r["prompt"] for r in make_task(tiny_model, tmp_path / "pairs.parquet", eval_fraction=0.25).eval_rows()}
    assert held_out.isdisjoint(set(data["prompt"]))  # the split is a partition


def test_cache_key_follows_data_and_model(tiny_model: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", standard_rows())
    key = make_task(tiny_model, path).cache_key()
    assert key == make_task(tiny_model, path).cache_key() and len(key) == 16
    assert make_task(tiny_model, path, max_length=64).cache_key() != key
    write_jsonl(path, standard_rows(11))
    assert make_task(tiny_model, path).cache_key() != key
    other = build_tiny_model(tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert make_task(other, path).cache_key() != make_task(tiny_model, path).cache_key()


def test_missing_model_is_one_clear_error(tmp_path: Path) -> None:
    task = make_task(tmp_path / "no-such-model", write_jsonl(tmp_path / "p.jsonl", standard_rows()))
    with pytest.raises(TaskError) as info:
        task.cache_key()
    assert str(info.value) == (
        f"model '{tmp_path / 'no-such-model'}' not found: not a local directory and not reachable on the "
        "Hugging Face hub (offline?)"
    )
    with pytest.raises(TaskError, match="not found"):
        task.reference()


def test_dataset_without_chosen_names_the_columns(tiny_model: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "answer": "b", "rejected": "c"}] * 3)
    with pytest.raises(TaskError, match=r"has no 'chosen' column.*\(found: answer, prompt, rejected\)"):
        make_task(tiny_model, path).preference_data()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", oops}\n', r"line 2 is not valid JSON"),
        (
            '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": 3, "rejected": "c"}\n',
            r"row 1 column 'chosen': expected a string",
        ),
        ("", "has no rows"),
    ],
)
def test_unreadable_dataset(tiny_model: Path, tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TaskError, match=match):
        make_task(tiny_model, path).preference_data()


def test_missing_dataset_file_and_bad_options(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="dataset file '.*missing.jsonl' not found"):
        make_task(tiny_model, tmp_path / "missing.jsonl").preference_data()
    with pytest.raises(TaskError, match="needs option 'dataset'"):
        HFTask({"model": str(tiny_model)})
    with pytest.raises(TaskError, match=r"unknown option\(s\) 'modle'.*valid: model, dataset"):
        HFTask({"model": "x", "dataset": "y", "modle": "z"})
    with pytest.raises(TaskError, match=r"eval_fraction must be in \(0, 1\), got 1.5"):
        HFTask({"model": "x", "dataset": "y", "eval_fraction": 1.5})
