"""The documentation says what the code does: README.md is a short front door, docs/ holds the reference.

- every command and option of the command line is in docs/CLI.md, every run-config field in docs/CONFIG.md;
- the generated blocks (``python docs/generate_reference.py``) are what the code generates now;
- every relative link resolves (file and heading), every cited module or repository path exists, and every
  section that a code comment cites by name from DESIGN.md or the README is a heading of the docs;
- README.md keeps its length, the CI's test command verbatim and the own-model example that
  tests/discovery/commands/test_run_first_run.py runs.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.paths import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 220
# The folders of the repository a page may cite as paths, and the import roots that map onto them.
TOP_DIRS = ("discovery", "evaluate", "candidates", "prompts", "benchmarks", "tests", "examples", "docs", ".ci")
PACKAGES = {"discovery": "discovery", "evaluate": "evaluate", "candidates": "candidates", "prompts": "prompts"}
DESIGN_HEADINGS = (
    "The loss contract",
    "Checking a candidate",
    "Training and fitness",
    "The score is computed where the candidate never ran",
    "Review and retrain",
    "Conventions",
)


def generator() -> types.ModuleType:
    """docs/generate_reference.py as a module (docs/ is not a package)."""
    name = "lossforge_docs_generate_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DOCS / "generate_reference.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """``text`` without fenced code blocks (their ``#`` lines are comments, their brackets code)."""
    return re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(text: str) -> list[str]:
    return [match.group(1).strip() for match in re.finditer(r"^#{1,6} (.+)$", prose(text), re.MULTILINE)]


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in headings(text):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


# ------------------------------------------------------------------------------------------------ the CLI


def cli_sections() -> dict[str, str]:
    """Command name -> its section of docs/CLI.md (from its ``### `lossforge NAME` `` heading to the next)."""
    text = read(DOCS / "CLI.md")
    pattern = re.compile(r"^### `lossforge ([\w-]+)`\n(.*?)(?=^#{1,3} |\Z)", re.MULTILINE | re.DOTALL)
    return {match.group(1): match.group(2) for match in pattern.finditer(text)}


def test_every_command_and_every_option_is_in_cli_md() -> None:
    import typer
    from lossforge.discovery.cli import app

    group = typer.main.get_command(app)
    sections = cli_sections()
    missing = []
    for name, command in group.commands.items():
        if name not in sections:
            missing.append(f"the command `lossforge {name}`")
            continue
        for param in command.params:
            if param.param_type_name == "option":
                names = [*param.opts, *param.secondary_opts]
            else:
                names = [param.name.upper()]
            missing += [f"`{option}` of `lossforge {name}`" for option in names if f"`{option}`" not in sections[name]]
    assert not missing, "docs/CLI.md lacks " + ", ".join(missing) + ": run `python docs/generate_reference.py`"


# ------------------------------------------------------------------------------------------------ the config


def nested_models(annotation: Any) -> Iterator[tuple[str, type]]:
    """(path suffix, model) for each pydantic model a field's type holds: itself, in a list ``[]``, as the
    values of a mapping ``.<model>``, or inside an optional."""
    from pydantic import BaseModel

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from nested_models(arg)
    elif origin is tuple and args:
        for suffix, model in nested_models(args[0]):
            yield "[]" + suffix, model
    elif origin is dict and len(args) == 2:
        for suffix, model in nested_models(args[1]):
            yield ".<model>" + suffix, model


def config_paths(model: type, prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        path = f"{prefix}.{name}" if prefix else name
        yield path
        for suffix, nested in nested_models(info.annotation):
            yield from config_paths(nested, path + suffix)


def test_every_config_field_is_in_config_md() -> None:
    from lossforge.discovery.config import RunConfig

    text = read(DOCS / "CONFIG.md")
    paths = list(config_paths(RunConfig))
    assert "search.confirm.top_k" in paths and "proposer.models[].weight" in paths  # the walk reaches nested groups
    missing = [path for path in paths if f"\n| `{path}` |" not in text]  # a row of the generated tables
    assert not missing, f"docs/CONFIG.md lacks {missing}: run `python docs/generate_reference.py`"


# ------------------------------------------------------------------------------------------------ generated blocks


def test_the_generated_blocks_are_what_the_code_generates() -> None:
    problems = generator().stale()
    assert not problems, "; ".join(problems) + ": run `python docs/generate_reference.py`"


def test_the_check_names_a_stale_block(tmp_path: Path) -> None:
    # What --check relies on: a block that differs from the code is reported by file.
    module = generator()
    for block in module.BLOCKS:
        target = tmp_path / block.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(read(ROOT / block.path), encoding="utf-8")
    module.write(tmp_path)  # current, whatever the checkout's copies are
    cli = tmp_path / "docs" / "CLI.md"
    cli.write_text(read(cli).replace("| `--json` |", "| `--jsonn` |", 1), encoding="utf-8")
    assert module.stale(tmp_path) == ["docs/CLI.md: the block after '<!-- generated: cli -->' is stale"]
    assert module.write(tmp_path) == ["docs/CLI.md"] and module.stale(tmp_path) == []


# ------------------------------------------------------------------------------------------------ links and paths


def links(text: str) -> list[str]:
    """Targets of the Markdown links of ``text``, outside code blocks and code spans."""
    text = re.sub(r"`[^`\n]*`", "", prose(text))
    return re.findall(r"\[[^\]\n]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(read(page)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(read(path)):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def module_attribute_exists(dotted: str) -> bool:
    """Whether ``lossforge.a.b.c`` names a module, package or a name in one, judged from the source files."""
    parts = dotted.split(".")[1:]
    if not parts or parts[0] not in PACKAGES:
        return False
    here = ROOT / PACKAGES[parts[0]]
    rest = parts[1:]
    while rest and ((here / rest[0]).is_dir() or (here / f"{rest[0]}.py").is_file()):
        here = here / rest[0] if (here / rest[0]).is_dir() else here / f"{rest[0]}.py"
        rest = rest[1:]
    if not rest:
        return True
    source = here / "__init__.py" if here.is_dir() else here
    return source.is_file() and re.search(rf"\b{re.escape(rest[0])}\b", read(source)) is not None


def cited_paths(text: str) -> tuple[list[str], list[str]]:
    """(repository paths, ``lossforge.`` dotted names) quoted in code spans of ``text``."""
    spans = re.findall(r"`([^`\n]+)`", prose(text))
    paths = [span for span in spans if re.fullmatch(rf"(?:{'|'.join(map(re.escape, TOP_DIRS))})/[\w./*-]*", span)]
    names = [match.group(0) for span in spans if (match := re.match(r"lossforge(?:\.\w+)+", span))]
    return paths, names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_cited_module_and_path_exists(page: Path) -> None:
    paths, names = cited_paths(read(page))
    missing = [path for path in paths if not any(ROOT.glob(path.rstrip("/")))]
    missing += [name for name in names if not module_attribute_exists(name)]
    assert not missing, f"{page.relative_to(ROOT)} cites what does not exist: {missing}"


def test_sections_cited_by_code_comments_exist() -> None:
    design = set(headings(read(DOCS / "DESIGN.md")))
    everywhere = {heading for page in PAGES for heading in headings(read(page))}
    missing = [f"DESIGN.md: {heading!r}" for heading in DESIGN_HEADINGS if heading not in design]
    sources = [path for top in PACKAGES.values() for path in (ROOT / top).rglob("*.py")]
    sources += [*(ROOT / "tests").glob("*.py"), *(ROOT / "evaluate").rglob("*.yaml")]
    for path in sources:
        for document, section in re.findall(r'\b(DESIGN\.md|README)[,:]? *"([^"\n]+)"', read(path)):
            known = design if document == "DESIGN.md" else everywhere
            if section not in known:
                missing.append(f"{path.relative_to(ROOT)} cites {document} {section!r}")
    assert not missing, missing


def test_design_numbers_the_checks_and_item_4_is_the_profile_and_fingerprint() -> None:
    text = read(DOCS / "DESIGN.md")
    section = text.split("## Checking a candidate\n", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^(\d)\. (.*?)(?=^\d\. |\Z)", section, re.MULTILINE | re.DOTALL)
    assert [number for number, _ in items] == ["1", "2", "3", "4"], items
    assert "profile" in items[3][1].lower() and "fingerprint" in items[3][1].lower()
    conventions = text.split("## Conventions\n", 1)[1]
    for needle in ("CPU stays float32", "pending", "duplicate", "timeout", "LoRA defaults", "r=16"):
        assert needle in conventions, needle


# ------------------------------------------------------------------------------------------------ the README


def test_the_readme_is_a_front_door() -> None:
    lines = read(README).splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move reference text into docs/"


def test_the_readme_keeps_the_ci_test_command_verbatim() -> None:
    ci = read(ROOT / ".ci" / "run").splitlines()
    command = ci[ci.index("# The README's test command, verbatim:") + 1]
    assert f"\n{command}\n" in read(README), command


def test_the_readme_shows_the_own_model_example_that_the_first_run_test_runs() -> None:
    tree = ast.parse(read(ROOT / "tests" / "discovery" / "commands" / "test_run_first_run.py"))
    example = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "OWN_MODEL_EXAMPLE" for t in node.targets)
    )
    assert f"\n{example}\n" in read(README), example
