"""Write the generated reference blocks of docs/ from the code, or check that they are current.

    python docs/generate_reference.py           # rewrite every generated block in place
    python docs/generate_reference.py --check   # exit 1, naming each stale block, if one differs from the code

A generated block sits between two marker lines and is the only part of its file this script touches; the
hand-written prose around it stays. The blocks:

- ``docs/CLI.md``, ``<!-- generated: cli -->``: every command of the typer app (``lossforge.discovery.cli.app``),
  walked through typer's click command tree, with its arguments and options (names, type, default, help);
- ``docs/CONFIG.md``, ``<!-- generated: config -->``: every field of ``RunConfig`` and its nested pydantic models
  (``lossforge.discovery.config``), by dotted path, with type, constraints, default and description;
- ``docs/TASKS.md``, ``<!-- generated: tasks -->``: every registered task (``lossforge.evaluate.tasks.TASKS``)
  with its defaults, headline metrics and options;
- ``docs/LIBRARY.md``, between ``<!-- library:start -->`` and ``<!-- library:end -->``: the built-in loss library
  as ``lossforge.candidates.library_table()`` writes it.

Where a config field's description comes from, first found wins: the field's own ``Field(description=...)``;
the ``DESCRIPTIONS`` table below; the comment on its line in ``examples/run.yaml``; the comment on its line in
``discovery/config.py``. ``--check`` also names an entry of that table whose field no longer exists.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
END = "<!-- end generated -->"

# Descriptions of config fields that the model does not describe and examples/run.yaml describes too tersely
# or not at all. ``Field(description=...)`` in discovery/config.py wins over this table (the entry can then go).
DESCRIPTIONS: dict[str, str] = {
    "proposer.prices.<model>.input_per_mtok": "USD per million prompt tokens of that model",
    "proposer.prices.<model>.output_per_mtok": "USD per million completion tokens of that model",
    "proposer.models[].model": "the model name the endpoint serves",
    "proposer.models[].base_url": "its endpoint; unset: `proposer.base_url`",
    "proposer.models[].api_key_env": "the variable holding its key; unset: `proposer.api_key_env`",
    "proposer.models[].prices": "its price; unset: `proposer.prices` of its name",
    "proposer.models[].prices.input_per_mtok": "USD per million prompt tokens",
    "proposer.models[].prices.output_per_mtok": "USD per million completion tokens",
    "proposer.temperature": "sampling temperature of the proposer's LLM",
    "proposer.concurrency": "LLM requests of one generation in flight at once",
    "proposer.timeout_s": "per-request timeout, seconds",
    "proposer.max_retries": "retries of a failed request (rate limits, 5xx, timeouts), with exponential backoff "
    "that honours `Retry-After`",
    "budget.max_llm_calls": "LLM calls after which the run stops proposing and finishes cleanly",
    "budget.max_tokens": "LLM tokens (prompt + completion) after which the run stops proposing",
    "budget.max_cost_usd": "LLM cost in USD after which the run stops proposing (needs `proposer.prices`)",
    "search.repair_rounds": "repairs per proposal slot, each showing the proposer the checker's errors",
    "search.history_best_k": "best scored candidates shown in each prompt",
    "search.history_recent_m": "most recent candidates (failures included) shown in each prompt",
    "search.lessons_max_chars": "longest lessons text put into a prompt",
    "search.fidelity.steps_fractions": "each rung's share of the training steps, increasing, ending with 1.0",
    "search.fidelity.keep": "share of a rung promoted to the next (at least one candidate)",
    "training.task": "what every candidate is trained and scored on: a built-in task or `package.module:Class`",
    "training.beta": "the loss's beta",
    "training.eval_samples": "held-out samples each score uses; null: the task's default",
    "training.task_options": "task options (`--option KEY=VALUE`), checked against the task's own",
    "seed": "the run seed: search seeds, held-out seeds and every proposal's seed derive from it",
    "proposer": "who writes proposals",
    "budget": "hard limits on LLM use; null: unlimited",
    "search": "the shape of the search",
    "training": "how each candidate is trained and scored",
    "execution": "where trainings run and how many at once",
    "training.time_limit_s": "wall-clock limit of one candidate's training, seconds; null: none",
}


# ------------------------------------------------------------------------------------------------ blocks


@dataclass(frozen=True)
class Block:
    """One generated block: the file it lives in, its two marker lines and what renders its content."""

    path: str
    start: str
    end: str
    render: Callable[[], str]


def _replace(text: str, block: Block, content: str) -> str:
    """``text`` with the lines between ``block``'s markers replaced by ``content``; ValueError without markers."""
    head, found, rest = text.partition(block.start + "\n")
    if not found:
        raise ValueError(f"{block.path}: no marker line {block.start!r}")
    _, found, tail = rest.partition(block.end)
    if not found:
        raise ValueError(f"{block.path}: no marker {block.end!r} after {block.start!r}")
    return head + block.start + "\n" + content + block.end + tail


def _current(text: str, block: Block) -> str | None:
    """The content between ``block``'s markers in ``text``, or None when the markers are missing."""
    _, found, rest = text.partition(block.start + "\n")
    if not found or block.end not in rest:
        return None
    return rest.partition(block.end)[0]


# ------------------------------------------------------------------------------------------------ helpers


def _md(text: str) -> str:
    """Plain text for a Markdown table cell: one line, pipes escaped, RST double backticks made single."""
    text = re.sub(r"\s+", " ", text.replace("``", "`")).strip()
    return text.replace("|", "\\|")


def _paragraphs(doc: str | None) -> str:
    """A docstring as Markdown paragraphs: RST double backticks made single, each paragraph on one line."""
    if not doc:
        return ""
    doc = inspect.cleandoc(doc).replace("``", "`")
    out = []
    for paragraph in re.split(r"\n\s*\n", doc):
        lines = paragraph.splitlines()
        if all(line.startswith(("- ", "  ")) for line in lines):  # a list: keep its lines
            out.append("\n".join(lines))
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


# ------------------------------------------------------------------------------------------------ the CLI


def _click_group() -> Any:
    import typer
    from lossforge.discovery.cli import app

    return typer.main.get_command(app)


def _help_extras(param: Any, ctx: Any) -> dict[str, str]:
    """What typer adds after a parameter's help, ``[default: 10.0; x>=0.5]``, as {"default": ..., "range": ...}."""
    record = param.get_help_record(ctx)
    match = re.search(r"  \[([^\[\]]*)\]$", record[1] if record else "", re.DOTALL)
    extras: dict[str, str] = {}
    for part in match.group(1).split("; ") if match else ():
        if part.startswith("default: "):
            extras["default"] = part.removeprefix("default: ")
        elif part == "required":
            extras["required"] = "yes"
        else:
            extras.setdefault("range", part)
    return extras


def _command_rows(command: Any, ctx: Any) -> Iterator[str]:
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        extras = _help_extras(param, ctx)
        kind = param.display_type(ctx).strip("<>")
        if param.param_type_name == "argument":
            names = f"`{param.name.upper()}`" + ("..." if param.nargs == -1 else "")
        else:
            names = ", ".join(f"`{name}`" for name in (*param.opts, *param.secondary_opts))
            if getattr(param, "is_flag", False):
                kind = "flag"
            elif param.multiple:
                kind = f"{kind.removeprefix('list[').removesuffix(']')}, repeatable"
        if "range" in extras:
            kind += f", {extras['range']}"
        default = "required" if "required" in extras else extras.get("default", "")
        yield f"| {names} | {_md(kind)} | {_md(default)} | {_md(param.help or '')} |"


def _usage(name: str, command: Any) -> str:
    pieces = [f"lossforge {name}"]
    for param in command.params:
        if param.param_type_name == "argument":
            piece = param.name.upper() + ("..." if param.nargs == -1 else "")
            pieces.append(piece if param.required else f"[{piece}]")
    pieces.append("[OPTIONS]")
    return " ".join(pieces)


def _command_help(text: str) -> str:
    """A command's help: prose paragraphs joined; click's no-rewrap paragraphs (``\\b``) as a code block."""
    out = []
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        if paragraph.startswith("\b"):
            lines = textwrap.dedent(paragraph.removeprefix("\b").strip("\n")).splitlines()
            out.append("```bash\n" + "\n".join(lines) + "\n```")
        else:
            out.append(" ".join(line.strip() for line in paragraph.splitlines()))
    return "\n\n".join(out)


def cli_reference() -> str:
    """Markdown for every command of the app: usage, help, and a table of its arguments and options."""
    group = _click_group()
    root = group.context_class(group, info_name="lossforge")
    names = list(group.commands)
    out = ["Commands: " + ", ".join(f"[`{name}`](#lossforge-{name})" for name in names) + ".", ""]
    for name in names:
        command = group.commands[name]
        if getattr(command, "hidden", False):
            continue
        ctx = command.context_class(command, info_name=name, parent=root)
        out += [f"### `lossforge {name}`", "", f"`{_usage(name, command)}`", ""]
        if command.help:
            out += [_command_help(command.help), ""]
        out += ["| argument / option | type | default | help |", "|---|---|---|---|"]
        out += list(_command_rows(command, ctx))
        out += ["| `--help` | flag |  | Show the command's help and exit. |", ""]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ the config


@dataclass(frozen=True)
class ConfigField:
    path: str  # dotted, e.g. "search.confirm.top_k"; "[]" marks a list item, "<model>" a mapping key
    kind: str
    default: str
    description: str


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(str(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}" if args and (len(args) == 1 or args[1] is Ellipsis) else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "mapping"
    if _is_model(annotation):
        return "group"
    if annotation is Path or (isinstance(annotation, type) and issubclass(annotation, Path)):
        return "path"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(info: Any) -> str:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = []
    for item in info.metadata:
        for attribute, symbol in symbols.items():
            if getattr(item, attribute, None) is not None:
                parts.append(f"{symbol} {getattr(item, attribute)}")
    return ", ".join(parts)


def _yaml_value(value: Any) -> str:
    import yaml
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return "(group)"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _default(info: Any) -> str:
    from pydantic_core import PydanticUndefined

    if info.default_factory is not None:
        return _yaml_value(info.default_factory())
    if info.default is PydanticUndefined:
        return "required"
    return _yaml_value(info.default)


def _nested(annotation: Any) -> list[tuple[str, type]]:
    """The models a field's type holds, with the path suffix that reaches each: ``""``, ``"[]"``, ``".<model>"``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_model(annotation):
        return [("", annotation)]
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in _nested(arg)]
    if origin is tuple and args:
        return [("[]" + suffix, model) for suffix, model in _nested(args[0])]
    if origin is dict and len(args) == 2:
        key = "<model>" if args[0] is str else "<key>"
        return [(f".{key}" + suffix, model) for suffix, model in _nested(args[1])]
    return []


def _yaml_comments() -> dict[str, str]:
    """Dotted path -> the comment on that key's line in examples/run.yaml."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (ROOT / "examples" / "run.yaml").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(name for _, name in stack), key])
        stack.append((indent, key))
        if "#" in rest:
            comments[path] = rest.split("#", 1)[1].strip()
    return comments


def _source_comments(model: type) -> dict[str, str]:
    """Field name -> the comment on the lines of its definition in the model's class body."""
    source = textwrap.dedent(inspect.getsource(model))
    by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            by_line[token.start[0]] = token.string.lstrip("#").strip()
    found = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            text = " ".join(by_line[n] for n in lines if n in by_line)
            if text:
                found[node.target.id] = text
    return found


def config_fields() -> list[tuple[str, type, list[ConfigField]]]:
    """(group path, model, fields) for RunConfig and every model nested in it, depth first."""
    from lossforge.discovery.config import RunConfig

    yaml_comments = _yaml_comments()
    groups: list[tuple[str, type, list[ConfigField]]] = []

    def walk(prefix: str, model: type) -> None:
        comments = _source_comments(model)
        rows, children = [], []
        for name, info in model.model_fields.items():
            path = f"{prefix}.{name}" if prefix else name
            constraints = _constraints(info)
            kind = _type_name(info.annotation) + (f", {constraints}" if constraints else "")
            key = re.sub(r"\.<[a-z]+>|\[\]", "", path)  # the YAML file shows no list items or mapping keys
            description = (
                info.description
                or DESCRIPTIONS.get(path)
                or (yaml_comments.get(key) if key == path else None)
                or comments.get(name, "")
            )
            rows.append(ConfigField(path, kind, _default(info), description))
            children += [(path + suffix, nested) for suffix, nested in _nested(info.annotation)]
        groups.append((prefix, model, rows))
        for path, nested in children:
            walk(path, nested)

    walk("", RunConfig)
    return groups


def config_reference() -> str:
    """Markdown: one table per group of the run config, each field by its dotted path."""
    out = []
    for prefix, model, rows in config_fields():
        out += [f"### `{prefix}`" if prefix else "### Top level", ""]
        intro = _paragraphs(model.__doc__)
        if intro:
            out += [intro, ""]
        out += ["| field | type | default | description |", "|---|---|---|---|"]
        for row in rows:
            default = f"`{_md(row.default)}`" if row.default not in ("(group)", "required") else row.default
            out.append(f"| `{row.path}` | {_md(row.kind)} | {default} | {_md(row.description)} |")
        out.append("")
    return "\n".join(out) + "\n"


def config_paths() -> list[str]:
    return [row.path for _, _, rows in config_fields() for row in rows]


# ------------------------------------------------------------------------------------------------ tasks


def tasks_reference() -> str:
    """Markdown: each registered task with its defaults, headline metrics and options."""
    from lossforge.evaluate.tasks import TASK_NAMES, TASKS

    out = []
    for name in TASK_NAMES:
        task = TASKS[name]
        out += [f"### `{name}`", "", f"`{task.__module__}.{task.__name__}`", ""]
        description = getattr(task, "description", "")
        if description:
            out += [_md(description), ""]
        objective = getattr(task, "objective", "")
        if objective:
            out += [f"Score: {_md(objective)}.", ""]
        headline = ", ".join(f"`{metric}`" for metric in getattr(task, "headline_metrics", ()))
        out += [
            f"Defaults: {task.default_steps} steps, beta {task.default_beta}, learning rate "
            f"{task.default_learning_rate}, batch size {task.default_batch_size}, max length {task.max_length}."
            + (f" Headline metrics: {headline}." if headline else ""),
            "",
        ]
        if task.OPTIONS:
            out += ["| option | default or meaning |", "|---|---|"]
            out += [f"| `{option}` | {_md(_option_value(value))} |" for option, value in task.OPTIONS.items()]
            out.append("")
    return "\n".join(out) + "\n"


def _option_value(value: Any) -> str:
    return value if isinstance(value, str) else f"`{_yaml_value(value)}`"


# ------------------------------------------------------------------------------------------------ the library


def library_reference() -> str:
    from lossforge.candidates import library_table

    return library_table()


BLOCKS: tuple[Block, ...] = (
    Block("docs/CLI.md", "<!-- generated: cli -->", END, cli_reference),
    Block("docs/CONFIG.md", "<!-- generated: config -->", END, config_reference),
    Block("docs/TASKS.md", "<!-- generated: tasks -->", END, tasks_reference),
    Block("docs/LIBRARY.md", "<!-- library:start -->", "<!-- library:end -->", library_reference),
)


def stale(root: Path = ROOT) -> list[str]:
    """One sentence per generated block that differs from what the code generates now (empty: all current)."""
    problems = []
    for block in BLOCKS:
        path = root / block.path
        if not path.exists():
            problems.append(f"{block.path} is missing")
            continue
        current = _current(path.read_text(encoding="utf-8"), block)
        if current is None:
            problems.append(f"{block.path} has no block between {block.start!r} and {block.end!r}")
        elif current != block.render():
            problems.append(f"{block.path}: the block after {block.start!r} is stale")
    known = set(config_paths())
    problems += [
        f"docs/generate_reference.py: DESCRIPTIONS names {path!r}, which is not a config field"
        for path in DESCRIPTIONS
        if path not in known
    ]
    return problems


def write(root: Path = ROOT) -> list[str]:
    """Rewrite every generated block; returns the files that changed."""
    changed = []
    for block in BLOCKS:
        path = root / block.path
        text = path.read_text(encoding="utf-8")
        new = _replace(text, block, block.render())
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(block.path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate (or --check) the generated blocks of docs/.")
    parser.add_argument("--check", action="store_true", help="exit 1 naming each stale block; change nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python docs/generate_reference.py` to regenerate", file=sys.stderr)
        return 1 if problems else 0
    changed = write()
    print("rewrote " + ", ".join(changed) if changed else "every generated block is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
