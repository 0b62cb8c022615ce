"""The judge task: a tiny model answers a question file, a scripted judge on loopback grades the answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.judge import JudgeTask, Question, parse_rating
from peft import LoraConfig, get_peft_model

from tests.openai_server import Reply, openai_server
from tests.tiny_hf import build_tiny_model, standard_rows, write_jsonl

__all__ = ["openai_server"]  # the fixture, imported so pytest finds it

QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["what is a"]},
    {"question_id": "q2", "turns": ["question one", "question two"], "reference": ["one", "two"]},
    {"question_id": 3, "turns": ["what is the answer"]},
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("judge")
    return {
        "model": build_tiny_model(root / "model"),
        "dataset": write_jsonl(root / "pairs.jsonl", standard_rows()),
        "questions": write_jsonl(root / "questions.jsonl", QUESTIONS),
    }


def make_task(files: dict[str, Path], base_url: str, **options: Any) -> JudgeTask:
    return JudgeTask(
        {
            "model": str(files["model"]),
            "dataset": str(files["dataset"]),
            "questions": str(files["questions"]),
            "judge_model": "judge-model",
            "judge_base_url": base_url,
            "max_new_tokens": 6,
            **options,
        }
    )


def grade_by_question(body: dict[str, Any]) -> str:
    """Judge replies keyed on the prompt, so concurrent judge calls get deterministic grades."""
    prompt = body["messages"][0]["content"]
    if "[User turn 2]" in prompt:  # only the grading of a second turn shows it
        return "The follow-up is fine, I think."  # no [[rating]]: a judge failure
    if "question one" in prompt:
        return "Weak. Rating: [[3]]"
    return "Clear and correct. Rating: [[8]]"


def test_mean_grade_excludes_unparseable_and_covers_two_turns(files: dict[str, Path], openai_server: Any) -> None:
    server = openai_server(default=grade_by_question)
    task = make_task(files, server.base_url, judge_prices={"judge-model": [1.0, 2.0]})
    model, tokenizer = task.reference()
    policy = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))  # as the engine hands it
    result = task.score(policy, tokenizer, seed=0)
    # Four answers: q1 -> 8, q2 turn 1 -> 3, q2 turn 2 -> unparseable (excluded), q3 -> 8.
    assert result.score == pytest.approx(19 / 3)
    assert result.metrics["judge_score"] == result.score
    assert (result.metrics["n_judged"], result.metrics["judge_failures"]) == (3.0, 1.0)
    assert result.metrics["judge_score_turn1"] == pytest.approx(19 / 3) and "judge_score_turn2" not in result.metrics
    assert result.metrics["judge_cost_usd"] > 0 and len(task.judge_calls) == 4
    failed = [j for j in task.judgements if j.rating is None]
    assert [(j.question_id, j.turn) for j in failed] == [("q2", 2)] and "no [[rating]]" in (failed[0].error or "")

    bodies = server.chat_requests
    assert all(b["model"] == "judge-model" and b["temperature"] == 0.0 and "response_format" not in b for b in bodies)
    second_turn = next(b["messages"][0]["content"] for b in bodies if "[User turn 2]" in b["messages"][0]["content"])
    answers = next(j for j in task.judgements if j.question_id == "q2" and j.turn == 1).answer
    assert "question one" in second_turn and "question two" in second_turn
    assert f"[Assistant answer to turn 1]\n{answers}\n" in second_turn
    assert "[Reference answer to turn 2]\ntwo" in second_turn and "grade only the assistant's answer" in second_turn


def test_single_turn_prompt_text(files: dict[str, Path]) -> None:
    task = make_task(files, "http://127.0.0.1:9/v1")
    prompt = task._template().render(question=Question("1", ("what is a",), "writing"), answers=["a b"], turn=1)
    assert prompt.startswith("You are an impartial judge. Grade the quality of an AI assistant's answer")
    assert prompt.endswith(
        '"Rating: [[5]]".\n\nCategory: writing\n\n[User turn 1]\nwhat is a\n\n'
        "[Assistant answer to turn 1 (grade this one)]\na b\n"
    )


def test_answers_see_the_first_turn_and_are_reproducible(files: dict[str, Path]) -> None:
    task = make_task(files, "http://127.0.0.1:9/v1", temperature=1.0)
    model, tokenizer = task.reference()
    question = Question("q", ("question one", "question two"))
    first, again = task.answer(model, tokenizer, question, seed=5), task.answer(model, tokenizer, question, seed=5)
    assert first == again and len(first) == 2  # seeded sampling repeats itself
    greedy = make_task(files, "http://127.0.0.1:9/v1")
    assert greedy.answer(model, tokenizer, question, seed=1) == greedy.answer(model, tokenizer, question, seed=2)


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("Rating: [[7]]", 7.0),
        ("format [[rating]] ... Rating: [[ 6.5 ]]", 6.5),
        ("[[2]] then [[9]]", 9.0),
        ("Rating: [[11]]", None),
        ("[[0]]", None),
        ("Rating: 7", None),
        ("", None),
    ],
)
def test_parse_rating(reply: str, rating: float | None) -> None:
    assert parse_rating(reply) == rating


def test_no_valid_grade_at_all_is_an_error(files: dict[str, Path], openai_server: Any) -> None:
    server = openai_server(default=Reply("I refuse to grade."))
    task = make_task(files, server.base_url, judge_concurrency=1)
    policy, tokenizer = task.reference()
    with pytest.raises(TaskError, match=r"no valid grade for any of 4 answers.*first reply: 'I refuse to grade.'"):
        task.score(policy, tokenizer, seed=0)


def test_judge_configuration_errors(files: dict[str, Path], openai_server: Any, tmp_path: Path) -> None:
    model, tokenizer = make_task(files, "http://127.0.0.1:9/v1").reference()
    server = openai_server(models=["gpt-4o"])
    with pytest.raises(TaskError, match="judge: model 'judge-model' not found at .*check the model name"):
        make_task(files, server.base_url).score(model, tokenizer, seed=0)
    assert len(server.chat_requests) == 1  # the first refusal stops the scoring
    unreachable = make_task(files, "http://127.0.0.1:9/v1", judge_max_attempts=1)
    with pytest.raises(TaskError, match=r"could not reach http://127.0.0.1:9/v1 : connection refused"):
        unreachable.score(model, tokenizer, seed=0)


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([{"question_id": 1, "turns": ["a", "b", "c"]}], "'turns' must be a list of 1 or 2 non-empty strings"),
        ([{"turns": ["a"]}], "line 1: needs 'question_id'"),
        ([], "has no questions"),
    ],
)
def test_bad_question_files(files: dict[str, Path], tmp_path: Path, lines: list[dict[str, Any]], match: str) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", lines)
    task = make_task({**files, "questions": path}, "http://127.0.0.1:9/v1")
    with pytest.raises(TaskError, match=match):
        task.load_questions()


def test_missing_options_and_files(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="needs option 'judge_model'"):
        JudgeTask({"model": "m", "dataset": "d", "questions": "q.jsonl"})
    task = make_task({**files, "questions": tmp_path / "nope.jsonl"}, "http://127.0.0.1:9/v1")
    with pytest.raises(TaskError, match="questions file '.*nope.jsonl' not found"):
        task.cache_key()
    (tmp_path / "bad.jsonl").write_text('{"question_id": 1, "turns": ["a"]}\nnot json\n')
    with pytest.raises(TaskError, match="line 2 is not valid JSON"):
        make_task({**files, "questions": tmp_path / "bad.jsonl"}, "x").load_questions()


def test_cache_key_depends_on_questions(files: dict[str, Path], tmp_path: Path) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", QUESTIONS[:1])
    key = make_task(files, "x").cache_key()
    assert key == make_task(files, "y").cache_key()  # the judge endpoint does not change data or reference
    assert key != make_task({**files, "questions": other}, "x").cache_key()


def test_collect_without_network_then_grade_from_json(files: dict[str, Path], openai_server: Any) -> None:
    server = openai_server(default=grade_by_question)
    task = make_task(files, server.base_url)
    policy, tokenizer = task.reference()
    collected = task.collect(policy, tokenizer, seed=3)
    assert server.requests == []  # phase 1 runs in the network-less worker: it must not touch the judge
    over_the_pipe = json.loads(json.dumps(collected))  # the worker returns JSON, never pickles
    assert set(over_the_pipe["answers"]) == {"1", "q2", "3"} and len(over_the_pipe["answers"]["q2"]) == 2
    graded = make_task(files, server.base_url).grade(over_the_pipe, seed=3)
    assert graded.score == pytest.approx(19 / 3) and len(server.chat_requests) == 4
    with pytest.raises(TaskError, match="lack question"):
        task.grade({"answers": {"1": ["x"]}}, seed=3)
