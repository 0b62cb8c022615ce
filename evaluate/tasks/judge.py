"""The ``judge`` task: the DiscoPOP fitness. A judge LLM grades the trained model's answers 1-10 (MT-Bench style).

The model and the training pairs come from the same options as the ``hf`` task (``model``, ``dataset``,
``split``...; this class extends :class:`~lossforge.evaluate.tasks.hf.HFTask`). Scoring differs:

1. ``questions``: a JSONL file, one question a line: ``question_id``, ``turns`` (one or two user turns),
   optional ``category`` and ``reference`` (reference answers, one per turn, shown to the judge).
2. The trained policy answers each turn in turn (the second turn sees the first answer), through the
   tokenizer's chat template (a plain ``User:/Assistant:`` format when it has none); greedy when
   ``temperature`` is 0 (default), else sampled with a seed derived from ``seed`` and the question.
3. Each answer is graded by ``judge_model`` behind any OpenAI-compatible endpoint (``judge_base_url``,
   ``judge_api_key_env``: the name of the environment variable holding the key, default ``OPENAI_API_KEY``;
   the key itself is never an option, so it never reaches a stored config or a cache key) with
   ``prompts/judge.j2``; the grade is the last ``[[N]]`` of the reply ("Rating: [[7]]"), 1 <= N <= 10 (MT-Bench,
   arXiv 2306.05685, single-answer grading).
4. A judgement without a valid grade, or a judge call that fails after its retries, is recorded and left out
   (metric ``judge_failures``). ``score`` = ``judge_score`` = the mean grade over judged answers;
   ``n_judged`` counts them. No grade at all is a :class:`TaskError` (the judge is misconfigured).

Scoring has two phases, because the training worker has no network: :meth:`JudgeTask.collect` generates
the answers (in the worker; JSON out) and :meth:`JudgeTask.grade` asks the judge (in the parent);
``scores_in_parent`` tells the engine so. :meth:`JudgeTask.score` runs both in one process.

Judge calls run concurrently (``judge_concurrency``); every call record is kept in ``judge_calls`` and the
per-answer outcomes in ``judgements``. An unreachable endpoint, a wrong key or an unknown judge model is a
:class:`TaskError` with the fix in the message; an exhausted ``judge_max_calls`` budget raises
:class:`~lossforge.evaluate.llm.BudgetExceeded`.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from lossforge.evaluate.tasks.base import TaskError, TaskScore
from lossforge.evaluate.tasks.hf import HFTask, number_option

if TYPE_CHECKING:
    from lossforge.evaluate.llm import LLMClient
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


@dataclass(frozen=True)
class Question:
    question_id: str
    turns: tuple[str, ...]
    category: str = ""
    reference: tuple[str, ...] = ()


@dataclass(frozen=True)
class Judgement:
    """One graded answer. ``rating`` is None when the reply had no valid grade or the call failed."""

    question_id: str
    turn: int
    answer: str
    rating: float | None
    reply: str
    error: str | None = None


class JudgeTask(HFTask):
    """Mean 1-10 grade of the policy's answers to a question file, given by a judge LLM."""

    name: ClassVar[str] = "judge"
    description: ClassVar[str] = (
        "A causal language model is fine-tuned with LoRA on a preference dataset; its answers to a question set "
        "are graded 1-10 by a judge LLM, MT-Bench style (the DiscoPOP paper's fitness)."
    )
    objective_name: ClassVar[str] = "judge_score"
    objective: ClassVar[str] = "the mean 1-10 grade the judge gives the trained policy's answers"
    headline_metrics: ClassVar[tuple[str, ...]] = ("judge_score", "n_judged")
    # The engine should run collect() in the (network-less) training worker and grade() in the parent.
    scores_in_parent: ClassVar[bool] = True
    OPTIONS: ClassVar[dict[str, str]] = {
        # The judge scores by its grades: hf's score options do not apply (its own temperature and
        # max_new_tokens, below, set the answers).
        **{name: text for name, text in HFTask.OPTIONS.items() if name not in HFTask.SCORE_OPTIONS},
        "questions": "JSONL file: question_id, turns (1 or 2), optional category, reference (required)",
        "judge_model": "judge model name at the endpoint, e.g. 'gpt-4o' (required)",
        "judge_base_url": "OpenAI-compatible endpoint (default $OPENAI_BASE_URL, else OpenAI)",
        "judge_api_key_env": "environment variable holding the judge's API key (default OPENAI_API_KEY)",
        "judge_prices": "{model: [USD per 1M input tokens, USD per 1M output tokens]} for cost accounting",
        "judge_timeout_s": "per-request timeout in seconds (default 120)",
        "judge_max_attempts": "HTTP attempts per judge call, retries included (default 5)",
        "judge_max_calls": "hard cap on judge calls per scoring (default: no cap)",
        "judge_concurrency": "judge requests in flight at once (default 4)",
        "judge_system_prompt_mode": "'system' or 'merge' (unused by the default single-message prompt)",
        "judge_template": "path of a Jinja2 judge template replacing prompts/judge.j2",
        "max_new_tokens": "answer length in tokens (default 256)",
        "temperature": "0 for greedy answers (default), > 0 for seeded sampling",
    }

    def __init__(self, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if "judge_api_key" in (options or {}):  # options are stored with the run and keyed in caches
            raise TaskError(
                "the judge's key is not an option (options are stored with the run): put the key in an "
                "environment variable and name it with judge_api_key_env (default OPENAI_API_KEY)"
            )
        super().__init__(options, **kwargs)
        for required in ("questions", "judge_model"):
            if not self.options.get(required):
                raise TaskError(f"task 'judge' needs option '{required}': {self.OPTIONS[required]}")
        self.questions_path = Path(str(self.options["questions"])).expanduser()
        self.judge_model = str(self.options["judge_model"])
        self.max_new_tokens = number_option(self.options, "max_new_tokens", 256, int)
        self.temperature = number_option(self.options, "temperature", 0.0, float)
        self.judge_concurrency = number_option(self.options, "judge_concurrency", 4, int)
        if self.max_new_tokens < 1 or self.judge_concurrency < 1 or self.temperature < 0:
            raise TaskError(
                f"options need max_new_tokens >= 1, judge_concurrency >= 1, temperature >= 0; got "
                f"{self.max_new_tokens}, {self.judge_concurrency}, {self.temperature}"
            )
        self.judge_calls: list[dict[str, Any]] = []
        self.judgements: list[Judgement] = []

    def _extra_key(self) -> dict[str, Any]:
        if not self.questions_path.is_file():
            raise TaskError(f"questions file '{self.questions_path}' not found")
        return {"questions": hashlib.sha256(self.questions_path.read_bytes()).hexdigest()}

    def load_questions(self) -> list[Question]:
        """The question file, validated; capped by ``eval_samples``."""
        questions = read_questions(self.questions_path)
        return questions[: self.eval_samples] if self.eval_samples else questions

    def score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, seed: int) -> TaskScore:
        """``grade(collect(...))`` in one process (which needs network access for the judge)."""
        return self.grade(self.collect(policy, tokenizer, seed=seed), seed=seed)

    def collect(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, seed: int) -> dict[str, Any]:
        """Phase 1, no network: the policy's answers, JSON-serialisable (``{"answers": {question_id: [...]}}``).

        The training worker has no network (isolation.py); it runs this and hands the result to the parent,
        which calls :meth:`grade`.
        """
        questions = self.load_questions()
        was_training = policy.training
        policy.eval()
        try:
            answers = {q.question_id: self.answer(policy, tokenizer, q, seed=seed + i) for i, q in enumerate(questions)}
        finally:
            policy.train(was_training)
        return {"answers": answers}

    def grade(self, collected: dict[str, Any], *, seed: int) -> TaskScore:
        """Phase 2, network: the judge grades the answers from :meth:`collect`."""
        questions = self.load_questions()
        answers = collected.get("answers", {})
        missing = [q.question_id for q in questions if q.question_id not in answers]
        if missing:
            raise TaskError(f"collected answers lack question(s) {', '.join(missing[:5])}; collect and grade differ")
        template = self._template()
        jobs = [(q, list(answers[q.question_id]), turn) for q in questions for turn in range(1, len(q.turns) + 1)]
        client = self._client()
        try:
            # The first call goes alone: a misconfigured judge (wrong URL, key, model) then costs one request.
            judgements = [self._judge(client, template, *jobs[0], seed=seed)]
            with ThreadPoolExecutor(max_workers=self.judge_concurrency) as pool:
                judgements += pool.map(lambda job: self._judge(client, template, *job, seed=seed), jobs[1:])
        finally:
            self.judge_calls = [record.to_dict() for record in client.calls]
            client.close()
        self.judgements = judgements
        return _summarize(judgements, client.usage())

    def answer(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, question: Question, *, seed: int
    ) -> list[str]:
        """The model's answer to each turn; later turns see the earlier answers."""
        messages: list[dict[str, str]] = []
        answers: list[str] = []
        device = next(model.parameters()).device
        for turn in question.turns:
            messages.append({"role": "user", "content": turn})
            prompt_ids = _prompt_ids(tokenizer, messages)
            # Keep the end of an over-long conversation: the latest turn is what must be answered.
            prompt_ids = prompt_ids[-max(1, self.max_length - self.max_new_tokens) :]
            input_ids = torch.tensor([prompt_ids], device=device)  # (1, T)
            sampling: dict[str, Any] = {"do_sample": False}
            if self.temperature > 0:
                torch.manual_seed(seed)  # per question, so answers do not depend on the order of questions
                sampling = {"do_sample": True, "temperature": self.temperature, "top_p": 1.0, "top_k": 0}
            with torch.no_grad():
                output = cast(Any, model).generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id
                    if tokenizer.pad_token_id is not None
                    else tokenizer.eos_token_id,
                    **sampling,
                )  # (1, T + new)
            text = str(tokenizer.decode(output[0, len(prompt_ids) :], skip_special_tokens=True)).strip()
            answers.append(text)
            messages.append({"role": "assistant", "content": text})
        return answers

    # internals -------------------------------------------------------------------------------------
    def _template(self) -> Any:
        import importlib.resources

        import jinja2

        custom = self.options.get("judge_template")
        try:
            source = (
                Path(str(custom)).expanduser().read_text(encoding="utf-8")
                if custom
                else importlib.resources.files("lossforge.prompts").joinpath("judge.j2").read_text(encoding="utf-8")
            )
            env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
            return env.from_string(source)
        except OSError as exc:
            raise TaskError(f"could not read judge template '{custom}': {exc}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TaskError(f"judge template '{custom or 'judge.j2'}' line {exc.lineno}: {exc.message}") from None

    def _client(self) -> LLMClient:
        from lossforge.evaluate.llm import Budget, LLMClient, RetryPolicy

        prices = self.options.get("judge_prices") or {}
        max_calls = self.options.get("judge_max_calls")
        try:
            return LLMClient(
                self.judge_model,
                base_url=self.options.get("judge_base_url"),
                api_key_env=str(self.options.get("judge_api_key_env") or "OPENAI_API_KEY"),
                timeout_s=number_option(self.options, "judge_timeout_s", 120.0, float),
                retry=RetryPolicy(max_attempts=number_option(self.options, "judge_max_attempts", 5, int)),
                prices={model: (float(p[0]), float(p[1])) for model, p in dict(prices).items()},
                budget=None if max_calls is None else Budget(max_calls=int(max_calls)),
                system_prompt_mode=self.options.get("judge_system_prompt_mode", "system"),
                temperature=0.0,
            )
        except (ValueError, TypeError, IndexError) as exc:
            raise TaskError(f"judge options: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the client constructor's own errors (no key for OpenAI's endpoint)
            raise TaskError(f"judge: {exc}") from None

    def _judge(
        self, client: LLMClient, template: Any, question: Question, answers: list[str], turn: int, *, seed: int
    ) -> Judgement:
        from lossforge.evaluate.llm import LLMError

        prompt = template.render(question=question, answers=answers, turn=turn)
        try:
            reply = client.chat([{"role": "user", "content": prompt}], json_mode=False, temperature=0.0, seed=seed)
        except LLMError as exc:
            if exc.config_error:  # every other call would fail alike: stop with the fix, not 0 judgements
                raise TaskError(f"judge: {exc}") from None
            return Judgement(question.question_id, turn, answers[turn - 1], None, "", error=str(exc))
        rating = parse_rating(reply.text)
        error = None if rating is not None else "no [[rating]] from 1 to 10 in the judge's reply"
        return Judgement(question.question_id, turn, answers[turn - 1], rating, reply.text, error)


def parse_rating(reply: str) -> float | None:
    """The last ``[[N]]`` in ``reply`` if 1 <= N <= 10, else None."""
    found = _RATING.findall(reply)
    if not found:
        return None
    rating = float(found[-1])
    return rating if 1.0 <= rating <= 10.0 else None


def read_questions(path: Path) -> list[Question]:
    if not path.is_file():
        raise TaskError(f"questions file '{path}' not found")
    questions: list[Question] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"questions file '{path}' line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{where} is not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict) or "question_id" not in item:
            raise TaskError(f"{where}: needs 'question_id' and 'turns'")
        turns, reference = item.get("turns"), item.get("reference") or []
        if not (
            isinstance(turns, list) and 1 <= len(turns) <= 2 and all(isinstance(t, str) and t.strip() for t in turns)
        ):
            raise TaskError(f"{where}: 'turns' must be a list of 1 or 2 non-empty strings, got {turns!r:.100}")
        if not (isinstance(reference, list) and all(isinstance(r, str) for r in reference)):
            raise TaskError(f"{where}: 'reference' must be a list of strings (one per turn)")
        questions.append(
            Question(str(item["question_id"]), tuple(turns), str(item.get("category") or ""), tuple(reference))
        )
    if not questions:
        raise TaskError(f"questions file '{path}' has no questions")
    return questions


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        encoded: Any = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, add_generation_prompt=True
        )
        return list(encoded["input_ids"])
    # Base models have no chat format; this plain one is what such models have seen most in pre-training.
    text = (
        "".join(f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}\n\n" for m in messages)
        + "Assistant:"
    )
    return list(tokenizer(text)["input_ids"])


def _summarize(judgements: list[Judgement], usage: dict[str, float | int]) -> TaskScore:
    rated = [j.rating for j in judgements if j.rating is not None]
    if not rated:
        first = next((j.reply or j.error or "" for j in judgements), "")
        raise TaskError(
            f"the judge gave no valid grade for any of {len(judgements)} answers (expected a reply ending "
            f"'Rating: [[N]]', N from 1 to 10); first reply: {first[:200]!r}"
        )
    mean = sum(rated) / len(rated)
    metrics = {
        "judge_score": mean,
        "n_judged": float(len(rated)),
        "judge_failures": float(len(judgements) - len(rated)),
        "judge_tokens": float(usage["prompt_tokens"] + usage["completion_tokens"]),
        "judge_cost_usd": float(usage["cost_usd"]),
    }
    for turn in (1, 2):
        of_turn = [j.rating for j in judgements if j.turn == turn and j.rating is not None]
        if of_turn:
            metrics[f"judge_score_turn{turn}"] = sum(of_turn) / len(of_turn)
    return TaskScore(score=mean, metrics=metrics)
