"""Parse a proposal: an LLM reply (JSON ``{"thought", "name", "code"}``) or a contract-format ``.py`` file.

Models wrap JSON in code fences, put prose before and after it, and write raw newlines inside JSON strings;
all of that is tolerated. What cannot be read raises ``ParseError`` whose message tells the model what to
send instead. Parsing never executes anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from lossforge.candidates import parse_source, read_metadata

REPLY_KEYS = ("thought", "name", "code")
MAX_REPLY_CHARS = 200_000  # JSON scanning is quadratic in the worst case; no honest reply is this long
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_REPLY_SHAPE = 'reply with one JSON object {"thought": "...", "name": "...", "code": "..."}'


class ParseError(ValueError):
    """A proposal that cannot be read; the message is a sentence an LLM can act on."""


@dataclass(frozen=True)
class ParsedProposal:
    thought: str
    name: str
    code: str


def _syntax_check(code: str) -> None:
    try:
        parse_source(code)
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise ParseError(
            f"the code is not valid Python ({where}{exc.msg}); send complete, valid Python source."
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise ParseError(
            f"the code cannot be parsed as Python ({type(exc).__name__}); send plain Python source."
        ) from None


def _strip_code_fence(code: str) -> str:
    """The ``code`` value itself is sometimes fenced (```python ... ```); keep what is inside."""
    stripped = code.strip()
    if not stripped.startswith("```"):
        return code
    match = _FENCE.match(stripped)
    if match is not None:
        return match.group(2)
    return stripped.partition("\n")[2]  # an opening fence that was never closed


def _json_objects(text: str) -> list[dict[str, object]]:
    """Every JSON object in ``text``, in order: whole text, fenced blocks, then any ``{`` that decodes."""
    decoder = json.JSONDecoder(strict=False)  # strict=False accepts raw newlines inside strings
    found: list[dict[str, object]] = []
    chunks = [text] + [m.group(2) for m in _FENCE.finditer(text)]
    for chunk in chunks:
        start = chunk.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except (json.JSONDecodeError, RecursionError):
                start = chunk.find("{", start + 1)
                continue
            if isinstance(value, dict):
                found.append(value)
                if "code" in value:
                    return found
            start = chunk.find("{", start + 1)
    return found


def parse_reply(text: str) -> ParsedProposal:
    """Read an LLM reply. Raises ``ParseError`` naming what is missing or malformed."""
    if not isinstance(text, str) or not text.strip():
        raise ParseError(f"the reply is empty; {_REPLY_SHAPE}.")
    if len(text) > MAX_REPLY_CHARS:
        raise ParseError(
            f"the reply has {len(text):,} characters, over the {MAX_REPLY_CHARS:,} limit; send only the JSON object."
        )
    objects = _json_objects(text)
    reply = next((obj for obj in objects if "code" in obj), None)
    if reply is None:
        if objects:
            keys = ", ".join(sorted(map(str, objects[0])))
            raise ParseError(f'the reply\'s JSON object has no "code" key (it has: {keys}); {_REPLY_SHAPE}.')
        raise ParseError(f'the reply contains no JSON object; {_REPLY_SHAPE}, with the Python source in "code".')
    for key in REPLY_KEYS:
        if key not in reply:
            raise ParseError(f'the reply\'s JSON object has no "{key}" key; {_REPLY_SHAPE}.')
        if not isinstance(reply[key], str):
            kind = type(reply[key]).__name__
            raise ParseError(f'"{key}" in the reply is a JSON {kind}, not a string; {_REPLY_SHAPE}.')
    code = _strip_code_fence(str(reply["code"]))
    name = str(reply["name"]).strip()
    if not code.strip():
        raise ParseError('"code" in the reply is empty; put the complete Python source of the loss module there.')
    if not name:
        raise ParseError('"name" in the reply is empty; give the loss a short snake_case name.')
    _syntax_check(code)
    return ParsedProposal(thought=str(reply["thought"]).strip(), name=name, code=code)


def parse_candidate_file(text: str) -> ParsedProposal:
    """Read a contract-format ``.py`` file: name from ``NAME``, thought from ``DESCRIPTION`` or the docstring."""
    if not text.strip():
        raise ParseError("the file is empty; a candidate file defines `def loss(...)` and its metadata.")
    _syntax_check(text)
    metadata = read_metadata(text)
    name = metadata.get("NAME")
    thought = metadata.get("DESCRIPTION") or metadata.get("docstring") or ""
    return ParsedProposal(
        thought=str(thought).strip(), name=str(name).strip() if isinstance(name, str) else "", code=text
    )


__all__ = ["REPLY_KEYS", "ParseError", "ParsedProposal", "parse_candidate_file", "parse_reply"]
