"""A tiny Llama saved with ``save_pretrained`` (its own word-level tokenizer and chat template) and preference
data files: what the tests of every task and command that loads a model from disk build on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = [
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "good",
    "bad",
    "fine",
    "poor",
    "what",
    "is",
    "the",
    "answer",
    "question",
    "one",
    "two",
    "three",
]
ROLES = ["<user>", "<assistant>", "<system>"]
# Renders a conversation as "<s> <user> ... </s> <assistant> ... </s>", like a minimal real chat format.
CHAT_TEMPLATE = (
    "<s> {% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def tiny_llama_config(vocab_size: int, **settings: Any) -> LlamaConfig:
    """The 2-layer, 32-wide Llama every model of these tests is (a causal LM, a reward classifier)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **settings,
    )


def build_tiny_model(directory: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama and a word-level tokenizer with a chat template, written with save_pretrained."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate([*specials, *ROLES, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = tiny_llama_config(len(vocab), pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def standard_rows(n: int = 10) -> list[dict[str, str]]:
    prompts = ["a b", "c d", "e f", "a c", "b d", "c e", "d f", "a e", "b f", "a d", "c f", "b e"]
    return [{"prompt": prompts[i % len(prompts)], "chosen": " good good", "rejected": " bad bad"} for i in range(n)]


def conversational_rows(n: int = 8) -> list[dict[str, Any]]:
    questions = ["what is a", "what is b", "what is the answer", "question one", "question two", "what is c"]
    return [
        {
            "prompt": [{"role": "user", "content": questions[i % len(questions)]}],
            "chosen": [{"role": "assistant", "content": "fine answer"}],
            "rejected": [{"role": "assistant", "content": "poor answer"}],
        }
        for i in range(n)
    ]


def nudge(model: torch.nn.Module, tokenizer: Any, texts: list[str], steps: int = 30) -> None:
    """A few LM steps on ``texts``: raises their likelihood, a stand-in for preference training."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
