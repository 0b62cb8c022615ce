"""Every flag an error message or hint names is a real option of some `lossforge` subcommand.

The flags are collected from the package source: every string literal (f-string parts included, help texts
too) except docstrings and literals that are a bare flag, which declare an option (``typer.Option("--x")``)
or are an argument of another program (``["git", "status", "--porcelain"]``), and the words after another
program's name in a hint ("lm-eval --tasks list"). The options come from the typer app itself, so commands
that others add count without this test changing.
"""

from __future__ import annotations

import ast
import re

import typer.main
from lossforge.discovery.cli import app

from tests.paths import ROOT

PACKAGE_DIRS = ("discovery", "evaluate", "candidates")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")
BARE_FLAG = re.compile(r"\s*--[\w-]+(=\S*)?\s*")
# A hint may name another program's flag ("lm-eval --tasks list"): the words after its name are its own.
# Flags of other programs (a `python -m module` maintainer command included) are not lossforge's.
OTHER_PROGRAM = re.compile(r"\b(?:lm-eval|pip|accelerate|ray|git|nvidia-smi|python -m \S+)\s[^;,()]*")


def cli_options() -> set[str]:
    group = typer.main.get_command(app)
    return {
        opt
        for command in group.commands.values()  # type: ignore[attr-defined]
        for param in command.params
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
    }


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    found = set()
    for node in nodes:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            found.add(id(body[0].value))
    return found


def flags_named_in_messages() -> dict[str, list[str]]:
    """flag -> the places (file:line) that name it."""
    named: dict[str, list[str]] = {}
    for directory in PACKAGE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            skip = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                    if BARE_FLAG.fullmatch(node.value):
                        continue
                    for flag in FLAG.findall(OTHER_PROGRAM.sub("", node.value)):
                        named.setdefault(flag, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return named


def test_the_collector_finds_the_flags_messages_name() -> None:
    named = flags_named_in_messages()
    # Known message sites: the resume hint of `lossforge run`, the --betas usage error, the --option format.
    assert {"--resume", "--betas", "--option", "--out"} <= set(named), sorted(named)


def test_every_flag_named_in_a_message_exists() -> None:
    options = cli_options()
    missing = {flag: places for flag, places in flags_named_in_messages().items() if flag not in options}
    assert missing == {}, f"messages name flags no lossforge command has: {missing}"
