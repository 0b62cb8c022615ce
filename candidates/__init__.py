"""The loss library: one contract-format Python file per known preference-optimization objective.

A candidate file defines exactly one public function
``loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta)``
returning per-pair losses of shape ``(batch,)``, plus metadata constants ``NAME``, ``DESCRIPTION``, ``ORIGIN``
and ``PARENTS``. A length-aware loss (SimPO, R-DPO, ORPO, CPO, RPO, length-normalized DPO) also names
``chosen_lengths`` and ``rejected_lengths`` after ``beta`` and receives the completions' token counts (float
tensors ``(batch,)``, possibly 0 for a completion truncated away); a reference-free loss ignores the reference
log-probs. Built-in files live beside this module; users' own and promoted losses live in the user
library (``$LOSSFORGE_HOME/candidates``, default ``~/.lossforge/candidates``) and are read beside them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the loss files themselves; the loader stays cheap to import
    import torch

# ``loss(pc, pr, rc, rr, beta)`` or, for a length-aware loss, ``loss(pc, pr, rc, rr, beta, chosen_lengths,
# rejected_lengths)`` (the lengths passed by keyword; see ``lossforge.evaluate.contract.takes_lengths``).
LossFn = Callable[..., "torch.Tensor"]

BUILTIN_DIR = Path(__file__).resolve().parent

# The single source of built-in loss names: CLI choices, docs and error messages derive from it.
BUILTIN_NAMES: tuple[str, ...] = (
    "dpo",
    "hinge",
    "ipo",
    "robust_dpo",
    "kto_pair",
    "dpop",
    "lrml",
    "padll",
    "aqfl",
    "aql",
    "cell",
    "dbaql",
    "pfl",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "apo_zero",
    "apo_down",
    "aot",
    "aot_unpaired",
    "simpo",
    "r_dpo",
    "orpo",
    "cpo",
    "rpo",
    "ln_dpo",
)

METADATA_FIELDS = ("NAME", "DESCRIPTION", "ORIGIN", "PARENTS")


@dataclass(frozen=True)
class Candidate:
    """One loss of the library: its metadata, its source text and the callable."""

    name: str
    description: str
    origin: str
    parents: tuple[str, ...]
    source: str
    fn: LossFn = field(repr=False, compare=False)
    path: Path | None = None
    builtin: bool = True


class LibraryError(ValueError):
    """A library file that does not follow the contract format."""


# CPython 3.11 keeps ast.parse's recursion-depth bookkeeping in interpreter-global state, so two threads
# building ASTs at once can fail with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905, fixed in 3.12). The discovery loop parses source from several threads (checks,
# proposals, archived candidate files), so every ast.parse of lossforge goes through this lock.
_AST_LOCK = threading.Lock()


def parse_source(source: str) -> ast.Module:
    """``ast.parse(source)``, one thread at a time (see ``_AST_LOCK``); raises what ``ast.parse`` raises."""
    with _AST_LOCK:
        return ast.parse(source)


def read_metadata(source: str) -> dict[str, object]:
    """Read ``NAME``/``DESCRIPTION``/``ORIGIN``/``PARENTS`` from module-level constants without executing anything.

    Missing fields are absent from the result; the module docstring is returned under ``"docstring"``.
    """
    tree = parse_source(source)
    found: dict[str, object] = {}
    docstring = ast.get_docstring(tree)
    if docstring:
        found["docstring"] = docstring
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in METADATA_FIELDS:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    pass
    return found


def user_library_dir() -> Path:
    """Where promoted and user-written candidates live: ``$LOSSFORGE_HOME/candidates``."""
    home = Path(os.environ.get("LOSSFORGE_HOME", Path.home() / ".lossforge"))
    return home / "candidates"


def _candidate_from_module(module: object, source: str, path: Path | None, builtin: bool) -> Candidate:
    meta = read_metadata(source)
    name = str(meta.get("NAME") or (path.stem if path else ""))
    fn = getattr(module, "loss", None)
    if not callable(fn):
        raise LibraryError(f"{path}: defines no function `loss`; a candidate file must define `def loss(...)`.")
    parents = meta.get("PARENTS") or ()
    return Candidate(
        name=name,
        description=str(meta.get("DESCRIPTION") or meta.get("docstring") or "").strip(),
        origin=str(meta.get("ORIGIN") or ""),
        parents=tuple(str(p) for p in parents) if isinstance(parents, list | tuple) else (str(parents),),
        source=source,
        fn=fn,
        path=path,
        builtin=builtin,
    )


def load_builtin(name: str) -> Candidate:
    """Load one built-in candidate by name (see ``BUILTIN_NAMES``)."""
    if name not in BUILTIN_NAMES:
        raise KeyError(f"unknown built-in candidate {name!r}; known: {', '.join(BUILTIN_NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    path = BUILTIN_DIR / f"{name}.py"
    return _candidate_from_module(module, path.read_text(encoding="utf-8"), path, builtin=True)


def load_file(path: str | Path, *, builtin: bool = False) -> Candidate:
    """Import a contract-format file from disk.

    This executes the file in the current process: use it for the user's own library, never for text
    proposed by a model (that goes through ``lossforge.evaluate.check`` and the sandbox first).
    """
    path = Path(path)
    source = path.read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"lossforge_user_candidates.{path.stem}", path)
    if spec is None or spec.loader is None:
        raise LibraryError(f"{path}: cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return _candidate_from_module(module, source, path, builtin=builtin)


def load_library(user_dir: str | Path | None = None, *, include_user: bool = True) -> dict[str, Candidate]:
    """All known candidates keyed by name: the built-in library, then the user library beside it.

    A user entry whose name collides with a built-in one is skipped with a warning naming both files;
    a built-in loss is never replaced.
    """
    library = {name: load_builtin(name) for name in BUILTIN_NAMES}
    if not include_user:
        return library
    directory = Path(user_dir) if user_dir is not None else user_library_dir()
    if not directory.is_dir():
        return library
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            candidate = load_file(path)
        except Exception as exc:  # noqa: BLE001 - a broken user file must not take the library down with it
            warnings.warn(f"skipping user candidate {path}: {exc}", stacklevel=2)
            continue
        if candidate.name in library:
            existing = library[candidate.name].path
            warnings.warn(
                f"user candidate {path} is named {candidate.name!r}, which is already taken by {existing}; "
                "it was not loaded. Rename its NAME constant (and file) to use it.",
                stacklevel=2,
            )
            continue
        library[candidate.name] = candidate
    return library


def library_table() -> str:
    """The built-in library as a Markdown table (name, origin, what it takes, description): docs/LIBRARY.md's
    block between ``<!-- library:start -->`` and ``<!-- library:end -->`` is this text, checked by a test."""
    rows = ["| loss | origin | inputs | description |", "|---|---|---|---|"]
    for name in BUILTIN_NAMES:
        metadata = read_metadata((BUILTIN_DIR / f"{name}.py").read_text(encoding="utf-8"))
        tree = parse_source((BUILTIN_DIR / f"{name}.py").read_text(encoding="utf-8"))
        loss = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "loss")
        named = {a.arg for a in loss.args.args + loss.args.kwonlyargs}
        inputs = "log-probs + lengths" if {"chosen_lengths", "rejected_lengths"} <= named else "log-probs"
        description = str(metadata.get("DESCRIPTION", "")).replace("|", "\\|")
        rows.append(f"| `{name}` | {metadata.get('ORIGIN', '')} | {inputs} | {description} |")
    return "\n".join(rows) + "\n"


__all__ = [
    "BUILTIN_NAMES",
    "Candidate",
    "LibraryError",
    "LossFn",
    "library_table",
    "load_builtin",
    "load_file",
    "load_library",
    "read_metadata",
    "user_library_dir",
]
