"""What review shows about a task, read without importing torch: its headline metrics
(``Task.headline_metrics``, the metrics it declares most important) and the name of its score
(``Task.objective_name``, e.g. ``reward``), for column headers and axis labels.

Review commands start in well under a second, and every task module imports torch at the top. So unless the
task's module is already imported (in the loop's process it is), its class is found by reading the module's
source with ``ast``: the class body's ``headline_metrics = (...)`` literal, else its base classes', followed
through the module and its ``from X import Name`` imports. A task that declares no headline metrics gets the
first metrics its rows report (never the training-log metrics ``train/*``), so a custom task still gets
readable columns.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from collections.abc import Iterable
from typing import Any

from lossforge.candidates import parse_source
from lossforge.evaluate.tasks import task_location

# Joins the tasks of a multi-task run into the one name review shows (no task name holds it).
TASKS_JOINED_BY = "+"

_MAX_DEPTH = 8  # base-class hops followed before giving up
FALLBACK_COUNT = 3


@functools.lru_cache(maxsize=64)
def declared_attribute(task: str, attribute: str) -> Any:
    """A literal class attribute of the task's class (inherited ones included), or None if not found."""
    location = task_location(task)
    if location is None:
        return None
    module_name, _, class_name = location.partition(":")
    loaded = sys.modules.get(module_name)
    if loaded is not None and hasattr(loaded, class_name):
        return getattr(getattr(loaded, class_name), attribute, None)
    return _read_attribute(module_name, class_name, attribute, 0)


def declared_headline_metrics(task: str) -> tuple[str, ...]:
    """The task class's ``headline_metrics``; ``()`` when it declares none or cannot be found."""
    found = declared_attribute(task, "headline_metrics")
    return tuple(str(name) for name in found) if isinstance(found, list | tuple) else ()


def objective_name(task: str | None) -> str:
    """The short name of the task's score (``reward`` for sentiment), ``score`` when unknown; a multi-task run's
    score is the normalized aggregate."""
    if task and TASKS_JOINED_BY in task:
        return "normalized score"
    found = declared_attribute(task, "objective_name") if task else None
    return found if isinstance(found, str) and found else "score"


def headline_metrics(task: str | None, metric_names: Iterable[str]) -> tuple[str, ...]:
    """The task's headline metrics, or (none declared) the first few ``metric_names`` that are not training-log
    metrics (``train/*``)."""
    if task and TASKS_JOINED_BY in task:  # a multi-task run: each task's normalized score is a metric
        return tuple(task.split(TASKS_JOINED_BY))
    declared = declared_headline_metrics(task) if task else ()
    if declared:
        return declared
    names = [name for name in dict.fromkeys(metric_names) if not name.startswith("train/")]
    return tuple(names[:FALLBACK_COUNT])


def _read_attribute(module_name: str, class_name: str, attribute: str, depth: int) -> Any:
    tree, package = _module_tree(module_name)
    if tree is None or depth > _MAX_DEPTH:
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    node = classes.get(class_name)
    if node is None:  # re-exported: ``from X import Class``
        source = _imported_from(tree, class_name, package)
        return _read_attribute(source, class_name, attribute, depth + 1) if source else None
    value = _literal_in_body(node, attribute)
    if value is not None:
        return value
    for base in node.bases:
        if not isinstance(base, ast.Name):
            continue
        if base.id in classes:
            found = _read_attribute(module_name, base.id, attribute, depth + 1)
        else:
            source = _imported_from(tree, base.id, package)
            found = _read_attribute(source, base.id, attribute, depth + 1) if source else None
        if found is not None:
            return found
    return None


def _literal_in_body(node: ast.ClassDef, attribute: str) -> Any:
    for statement in node.body:
        target, value = None, None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign):
            target, value = statement.target, statement.value
        if isinstance(target, ast.Name) and target.id == attribute and value is not None:
            try:
                return ast.literal_eval(value)
            except ValueError:  # not a literal (computed): unknown without importing
                return None
    return None


def _imported_from(tree: ast.Module, name: str, package: str) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            if node.level == 0:
                return node.module
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            return f"{base}.{node.module}" if node.module else base
    return None


def _module_tree(module_name: str) -> tuple[ast.Module | None, str]:
    """The parsed source of ``module_name`` (found, not imported: only its parent packages are) and its
    package name."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None, ""
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_source"):
        return None, ""
    try:
        source = spec.loader.get_source(module_name)
        tree = parse_source(source or "")
    except (ImportError, OSError, SyntaxError):
        return None, ""
    package = module_name if spec.submodule_search_locations else module_name.rpartition(".")[0]
    return tree, package


__all__ = ["TASKS_JOINED_BY", "declared_attribute", "declared_headline_metrics", "headline_metrics", "objective_name"]
