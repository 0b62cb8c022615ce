"""The shape of the code base that docs/DESIGN.md and docs/ARCHITECTURE.md promise: rooms, the dependency
direction the architecture page states, no import cycle, module sizes, one place where candidate code is
executed, and the README's import names."""

from __future__ import annotations

import ast
import importlib
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT

PACKAGES = {"discovery": "lossforge.discovery", "evaluate": "lossforge.evaluate", "candidates": "lossforge.candidates"}
MAX_MODULE_LINES = 400


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of a room's source file (``discovery/loop.py``: ``lossforge.discovery.loop``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["lossforge", *parts])


def _imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, wherever the import stands (a function, ``if TYPE_CHECKING:``): each
    ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (c may be a module), relative imports resolved."""
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _node(module: str, level: int) -> str | None:
    """The node of ``module`` in a graph of ``lossforge`` rooms (level 1) or of discovery's parts (level 2)."""
    parts = module.split(".")
    if parts[0] != "lossforge" or len(parts) <= level or (level == 2 and parts[1] != "discovery"):
        return None
    return parts[level]


def _import_graph(folders: tuple[str, ...], level: int, root: Path = ROOT) -> dict[str, dict[str, set[str]]]:
    """node -> node it imports -> the files that import it, over every module under ``folders``."""
    graph: dict[str, dict[str, set[str]]] = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            source = _node(_module_name(path, root), level)
            if source is None:
                continue
            for name in _imports_of(path, root):
                target = _node(name, level)
                if target is not None and target != source and _is_node(root, name, level):
                    graph.setdefault(source, {}).setdefault(target, set()).add(str(path.relative_to(root)))
    return graph


def _is_node(root: Path, module: str, level: int) -> bool:
    """Whether ``module``'s node is a real room, sub-package or module (``from a import name`` names objects too)."""
    parts = module.split(".")[1 : level + 1]
    folder = root.joinpath(*parts)
    return folder.is_dir() or folder.with_suffix(".py").is_file()


def _cycles(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """The import cycles a depth-first search of ``graph`` closes (none: it has no cycle), each as
    ``a -> b (files importing b) -> a (files importing a)``."""
    found: list[str] = []
    done: set[str] = set()

    def visit(path: list[str]) -> None:
        for target in sorted(graph.get(path[-1], {})):
            if target in path:
                cycle = path[path.index(target) :] + [target]
                steps = [f"{b} ({', '.join(sorted(graph[a][b]))})" for a, b in itertools.pairwise(cycle)]
                found.append(" -> ".join([cycle[0], *steps]))
            elif target not in done:
                visit([*path, target])
        done.add(path[-1])

    for start in sorted(graph):
        if start not in done:
            visit([start])
    return found


def _reaches_review(start: str, root: Path = ROOT) -> list[str]:
    """The import chain from ``start`` to ``lossforge.discovery.review``, following discovery modules that are
    not review (a module's import runs its packages' ``__init__`` too); [] when there is none."""
    files = {_module_name(path, root): path for path in (root / "discovery").rglob("*.py")}
    chains = {start: [start]}
    queue = [start]
    while queue:
        module = queue.pop(0)
        for name in sorted(_imports_of(files[module], root)):
            parts = name.split(".")
            for depth in range(3, len(parts) + 1):  # the module and each package above it
                target = ".".join(parts[:depth])
                if target == "lossforge.discovery.review" or target.startswith("lossforge.discovery.review."):
                    return [*chains[module], target]
                if target in files and target not in chains:
                    chains[target] = [*chains[module], target]
                    queue.append(target)
    return []


def test_no_module_is_over_the_size_limit() -> None:
    too_long = {
        str(path.relative_to(ROOT)): lines
        for folder in PACKAGES
        for path in _modules(folder)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


@pytest.mark.parametrize(("folder", "forbidden"), [("evaluate", "lossforge.discovery"), ("candidates", "lossforge.")])
def test_dependencies_point_one_way(folder: str, forbidden: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imported(path) if n.startswith(forbidden))
        for path in _modules(folder)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _documented_room_imports() -> dict[str, set[str]]:
    """The rooms docs/ARCHITECTURE.md's opening block says each room may import (``imports X and Y``,
    ``imports X; never Z``, ``imports nothing of lossforge``)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("```", 2)[1]
    allowed: dict[str, set[str]] = {}
    for line in block.splitlines():
        match = re.match(r"^(\w+)/\s.*\bimports (.+)$", line)
        if match is None:
            continue
        said = match.group(2).split(";")[0]
        allowed[match.group(1)] = set() if "nothing" in said else set(re.findall(r"\b(\w+)\b", said)) - {"and"}
    return allowed


def test_the_architecture_page_states_the_dependency_direction_the_code_has() -> None:
    allowed = _documented_room_imports()
    assert set(allowed) == set(PACKAGES), f"docs/ARCHITECTURE.md names the rooms {sorted(allowed)}"
    actual = {
        folder: {
            room
            for path in _modules(folder)
            for name in _imports_of(path)
            for room, package in PACKAGES.items()
            if room != folder and (name == package or name.startswith(package + "."))
        }
        for folder in PACKAGES
    }
    undocumented = {folder: sorted(rooms - allowed[folder]) for folder, rooms in actual.items()}
    assert {folder: rooms for folder, rooms in undocumented.items() if rooms} == {}


def test_no_import_cycle_between_rooms_or_between_the_parts_of_discovery() -> None:
    # Parts: discovery's sub-packages (storage, search, scoring, proposers, review, commands) and its top-level
    # modules (config, pipeline, loop, ...). An import anywhere in a module counts, lazy and TYPE_CHECKING ones too.
    assert _cycles(_import_graph(tuple(PACKAGES), level=1)) == []
    assert _cycles(_import_graph(("discovery",), level=2)) == []


def test_the_loop_does_not_import_the_review_layer() -> None:
    # The loop knows nothing of the HTML report: `lossforge run` hands it an on_generation_end callback that writes it.
    assert _reaches_review("lossforge.discovery.loop") == []


def test_the_training_worker_does_not_import_its_launcher() -> None:
    # The launcher starts the worker; an import back would make the two a cycle again.
    worker = ROOT / "evaluate" / "training" / "worker.py"
    assert "lossforge.evaluate.training.launcher" not in _imported(worker)


def test_candidate_code_is_executed_in_one_place() -> None:
    callers = []
    for folder in PACKAGES:
        for path in _modules(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "exec":
                    callers.append(str(path.relative_to(ROOT)))
    assert callers == ["evaluate/contract.py"]


@pytest.mark.parametrize(
    "old",
    [
        "lossforge.evaluate.parse",
        "lossforge.evaluate.policy",
        "lossforge.evaluate.profile",
        "lossforge.evaluate.trainer",
    ],
)
def test_no_alias_keeps_an_old_module_name_importable(old: str) -> None:
    # Modules live where their concept does (checking/, training/); a young project carries no import shims.
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def test_the_package_entry_points_of_the_readme_import() -> None:
    from lossforge.candidates import load_library
    from lossforge.discovery.config import load_config
    from lossforge.discovery.loop import run_discovery
    from lossforge.evaluate import TrainConfig, check, check_many, train_candidate
    from lossforge.evaluate.tasks.base import Task

    assert all(callable(f) for f in (load_library, load_config, run_discovery, check, check_many, train_candidate))
    assert isinstance(TrainConfig, type) and isinstance(Task, type)


def test_importing_the_package_and_the_review_layer_stays_free_of_torch() -> None:
    code = (
        "import sys, lossforge.evaluate, lossforge.discovery.storage.archive, lossforge.discovery.config, "
        "lossforge.discovery.cli; print('torch' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip() == "False"


def test_every_ast_parse_goes_through_the_thread_safe_helper() -> None:
    # CPython 3.11's ast.parse is not safe from concurrent threads (python/cpython#106905); the loop checks,
    # proposes and archives from several threads, so only ``lossforge.candidates.parse_source`` may call it.
    callers = []
    for folder in PACKAGES:
        for path in _modules(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                is_parse = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                if is_parse and node.func.attr == "parse" and getattr(node.func.value, "id", None) == "ast":
                    callers.append(str(path.relative_to(ROOT)))
    assert callers == ["candidates/__init__.py"]


def test_parse_source_holds_up_under_concurrent_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from lossforge.candidates import load_builtin, parse_source

    source = load_builtin("lrml").source
    with ThreadPoolExecutor(8) as pool:
        trees = list(pool.map(parse_source, [source] * 400))
    assert all(ast.dump(tree) == ast.dump(trees[0]) for tree in trees)
