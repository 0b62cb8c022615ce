"""Parsing LLM replies and candidate files: tolerated noise, and actionable errors for what cannot be read."""

from __future__ import annotations

import json

import pytest
from lossforge.evaluate.checking.parse import ParseError, parse_candidate_file, parse_reply

CODE = "import torch\n\n\ndef loss(pc, pr, rc, rr, beta):\n    return -(pc - rc)\n"
REPLY = {"thought": "a thought", "name": "my_loss", "code": CODE}


def test_plain_json_reply() -> None:
    parsed = parse_reply(json.dumps(REPLY))
    assert (parsed.thought, parsed.name, parsed.code) == ("a thought", "my_loss", CODE)


def test_fenced_json_with_prose_around_it() -> None:
    text = "Here is my proposal.\n```json\n" + json.dumps(REPLY, indent=2) + "\n```\nIt should work well."
    assert parse_reply(text).code == CODE


def test_raw_newlines_inside_json_strings_are_tolerated() -> None:
    text = '{"thought": "t", "name": "n", "code": "' + CODE + '"}'  # literal newlines
    assert parse_reply(text).code == CODE


def test_code_value_wrapped_in_a_python_fence() -> None:
    reply = dict(REPLY, code="```python\n" + CODE + "```")
    assert parse_reply(json.dumps(reply)).code == CODE


def test_earlier_json_without_code_is_skipped() -> None:
    text = 'Config: {"beta": 0.1}. Answer: ' + json.dumps(REPLY)
    assert parse_reply(text).name == "my_loss"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the reply is empty"),
        ("I cannot help with that.", "contains no JSON object"),
        ('{"thought": "t", "name": "n"}', 'has no "code" key (it has: name, thought)'),
        ('{"name": "n", "code": "x = 1"}', 'has no "thought" key'),
        ('{"thought": "t", "name": 3, "code": "x = 1"}', '"name" in the reply is a JSON int, not a string'),
        ('{"thought": "t", "name": " ", "code": "x = 1"}', '"name" in the reply is empty'),
        ('{"thought": "t", "name": "n", "code": "  "}', '"code" in the reply is empty'),
        ('{"thought": "t", "name": "n", "code": "def loss(:"}', "the code is not valid Python (line 1"),
        ("{" * 10 + "x" * 300_000, "over the 200,000 limit"),
    ],
)
def test_unreadable_replies_say_what_to_send(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=None) as caught:
        parse_reply(text)
    assert message in str(caught.value)


def test_candidate_file_metadata() -> None:
    source = '"""Doc."""\nNAME = "x"\nDESCRIPTION = "blend"\n' + CODE
    parsed = parse_candidate_file(source)
    assert (parsed.name, parsed.thought, parsed.code) == ("x", "blend", source)


def test_candidate_file_falls_back_to_the_docstring() -> None:
    assert parse_candidate_file('"""Logistic loss."""\n' + CODE).thought == "Logistic loss."


def test_candidate_file_syntax_error_names_the_line() -> None:
    with pytest.raises(ParseError, match="line 2"):
        parse_candidate_file("import torch\ndef loss(:\n")
