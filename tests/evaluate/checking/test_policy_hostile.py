"""The allowlist policy against hostile candidates: the two escapes of the old denylist, and the ways a loss could
change the trainer, keep state, break determinism or read the environment. Each is refused with a sentence that
names what was wrong."""

from __future__ import annotations

import pytest
from lossforge.evaluate.checking.policy import check_policy

from tests.paths import HOSTILE

# fixture -> fragments, each expected in one error
EXPECTED: dict[str, tuple[str, ...]] = {
    # escape 1 of the denylist: a legacy storage's `.type(str)` imports `builtins.<name>`
    "storage_type_builtins": (
        "`.storage_type` is not allowed: it reaches files, raw memory or storages",
        "`.grad_fn` is not allowed: it reaches the autograd graph",
    ),
    # escape 2 of the denylist: every bare name resolves in torch
    "import_alias_builtins": (
        "`__builtins__` is not allowed: dunder names reach interpreter internals",
        "`import torch as __builtins__` is not allowed: import it under its canonical name, `import torch`",
    ),
    "except_rebind": ("do not rebind the module name `torch` (here as an exception variable)",),
    "graph_walk": (
        "`.grad_fn` is not allowed: it reaches the autograd graph",
        "`.variable` is not allowed: it reaches the autograd graph",
    ),
    "register_prehook": ("`.grad_fn` is not allowed: it reaches the autograd graph",),
    "call_counter": (
        "module-level lists are mutable state; make `CALLS` a tuple",
        "the default value of `_state` must be an immutable constant",
        "item assignment (`x[...] = v`) changes a tensor or list in place",
        "`.append` is not allowed: it is not one of the allowed tensor methods",
    ),
    "inplace_training": (
        "`.add_` is not allowed: it modifies a tensor in place (names ending in `_` do); use `add`",
        "`.grad_fn` is not allowed",
    ),
    "global_state": (
        "`.GRID_SAMPLE_INTERPOLATION_MODES` is not allowed: it reads or changes global state",
        "`.autocast_increment_nesting` is not allowed: it reads or changes global state",
        "`.rand` is not allowed: it is random or returns uninitialised memory",
    ),
    "environ_read": ("importing `os` is not allowed; candidates may import only `import torch`",),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_fixture_is_refused_with_its_reason(name: str) -> None:
    result = check_policy((HOSTILE / f"{name}.py").read_text(encoding="utf-8"))
    assert result.passed is False
    for fragment in EXPECTED[name]:
        assert any(fragment in error for error in result.errors), (fragment, result.errors)


def test_the_storage_escape_is_refused_without_the_grad_fn_guard() -> None:
    """The storage chain alone, outside any guard: `.storage_type` and the importing `.type` are both refused."""
    source = (HOSTILE / "storage_type_builtins.py").read_text(encoding="utf-8")
    unguarded = source.replace("    if policy_chosen_logps.grad_fn is not None:\n        ", "    ")
    assert "grad_fn is not None" not in unguarded
    errors = check_policy(unguarded).errors
    assert [error.split(" is not allowed")[0] for error in errors] == ["line 15: `.type`", "line 15: `.storage_type`"]


def test_a_short_alias_is_refused_as_non_canonical() -> None:
    source = (HOSTILE / "import_alias_builtins.py").read_text(encoding="utf-8")
    aliased = source.replace("import torch as __builtins__", "import torch as T").replace("os.system", "T.os.system")
    errors = check_policy(aliased).errors
    assert any("`import torch as T` is not allowed: import it under its canonical name" in e for e in errors)
    assert not any("__builtins__" in e for e in errors)
