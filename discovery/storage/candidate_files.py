"""The library's contract file format for discovered candidates: ``contract_file_text(code, ...)`` adds or
rewrites ``NAME``/``DESCRIPTION``/``ORIGIN``/``PARENTS`` so that a discovered candidate can be promoted by copying.
"""

from __future__ import annotations

import ast
import json

from lossforge.candidates import METADATA_FIELDS, parse_source


def contract_file_text(code: str, *, name: str, description: str, origin: str, parents: list[str]) -> str:
    """``code`` with its metadata constants replaced by the given values (inserted after the imports).

    Code that does not parse is kept verbatim below the constants: the file then records what was proposed
    even though it cannot be promoted.
    """
    block = [
        f"NAME = {json.dumps(name)}",
        f"DESCRIPTION = {json.dumps(description)}",
        f"ORIGIN = {json.dumps(origin)}",
        f"PARENTS = {json.dumps([str(p) for p in parents])}",
    ]
    lines = code.splitlines()
    try:
        tree = parse_source(code)
    except SyntaxError:
        return "\n".join(["# This proposal does not parse; kept as proposed.", *block, "", *lines]) + "\n"
    removed: set[int] = set()  # 0-based line numbers of the old metadata assignments
    insert_at = 0  # after the leading docstring and imports
    leading = True
    for node in tree.body:
        is_header = isinstance(node, ast.Import | ast.ImportFrom) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        )
        if leading and is_header:
            insert_at = node.end_lineno or node.lineno
        else:
            leading = False
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id in METADATA_FIELDS for t in targets):
            removed.update(range(node.lineno - 1, node.end_lineno or node.lineno))
    out: list[str] = []
    for number, line in enumerate(lines):
        if number == insert_at:
            out.extend(["", *block, ""] if out else [*block, ""])
        if number not in removed:
            out.append(line)
    if insert_at >= len(lines):
        out.extend(["", *block])
    text = "\n".join(out)
    while "\n\n\n\n" in text:  # removing old constants can leave runs of blank lines
        text = text.replace("\n\n\n\n", "\n\n\n")
    return text.rstrip("\n") + "\n"


__all__ = ["contract_file_text"]
