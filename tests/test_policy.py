"""Static policy: one focused test per screening rule, matching the message the LLM will read."""

from __future__ import annotations

import pytest
from lossforge.candidates import load_library
from lossforge.evaluate.checking.policy import MAX_SOURCE_CHARS, check_policy

SIGNATURE = (
    "def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):"
)
RETURN = "    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps))"
HEADER = "import math\nimport torch\nimport torch.nn.functional as F\n"


def module(body: str = "", *, top: str = "") -> str:
    """A valid candidate with ``body`` inserted at the top of ``loss`` and ``top`` at module level."""
    return f"{HEADER}{top}\n{SIGNATURE}\n{body}{RETURN}\n"


def errors_of(source: str) -> list[str]:
    return check_policy(source).errors


def test_valid_candidate_passes_without_warnings() -> None:
    result = check_policy(module(top='NAME = "x"\nTAU = 1 / 20\nLOG2 = math.log(2)\nPARENTS = ["dpo"]\n'))
    assert result.errors == [] and result.warnings == []


@pytest.mark.parametrize("name", sorted(load_library(include_user=False)))
def test_library_entry_passes(name: str) -> None:
    assert errors_of(load_library(include_user=False)[name].source) == []


RULES = [
    # (rule, source, expected fragment of one error)
    ("size limit", module(top="X = 1\n" * (MAX_SOURCE_CHARS // 6 + 1)), "over the 20,000 limit"),
    ("syntax", "def loss(:\n", "not valid Python"),
    ("no loss", HEADER + "def _helper(x):\n    return x\n", "no function `loss` is defined"),
    ("loss twice", module() + SIGNATURE + "\n" + RETURN + "\n", "`loss` is defined 2 times"),
    ("second public function", module(top="def helper(x):\n    return x\n"), "rename it `_helper`"),
    ("signature", HEADER + "def loss(pc, pr):\n    return pc\n", "`loss` takes 2 positional parameters"),
    (
        "varargs",
        HEADER + "def loss(a, b, c, d, e, *rest):\n    return a\n",
        "takes 5 positional parameters; the contract",
    ),
    ("disallowed import", module(top="import os\n"), "importing `os` is not allowed"),
    ("relative import", module(top="from . import x\n"), "importing `.` is not allowed"),
    ("star import", module(top="from math import *\n"), "import names explicitly"),
    ("import inside function", module("    import math\n"), "imports are allowed only at the top"),
    ("module-level call", module(top="torch.manual_seed(0)\n"), "is not allowed at module level"),
    ("module-level tensor", module(top="W = torch.ones(3)\n"), "module-level values must be numeric constants"),
    ("module-level if", module(top="if True:\n    X = 1\n"), "is not allowed at module level"),
    ("rebinding loss", module(top="loss = 1\n"), "do not rebind `loss`"),
    ("forbidden builtin open", module("    open('x', 'w')\n"), "`open` is not allowed"),
    ("forbidden builtin eval", module("    eval('1')\n"), "`eval` is not allowed"),
    ("forbidden builtin getattr", module("    getattr(torch, 'lo' + 'ad')\n"), "`getattr` is not allowed"),
    ("forbidden builtin print", module("    print(beta)\n"), "`print` is not allowed"),
    ("dunder name", module("    __builtins__['eval']('1')\n"), "`__builtins__` is not allowed"),
    ("dunder attribute", module("    policy_chosen_logps.__class__\n"), "`.__class__` is private or a dunder"),
    ("private attribute", module("    torch._C\n"), "`._C` is private or a dunder"),
    ("torch namespace", module("    torch.load('x.pt')\n"), "`.load` is not allowed: it reaches files"),
    ("nested namespace", module("    torch.nn.utils\n"), "`.utils` is not allowed"),
    ("global state", module("    torch.set_default_dtype(torch.float64)\n"), "`.set_default_dtype` is not allowed"),
    ("seeding", module("    torch.manual_seed(0)\n"), "`.manual_seed` is not allowed"),
    ("module re-exported by torch", module("    torch.os.getcwd()\n"), "`torch.os` is the module `os`"),
    ("module through F", module("    F.torch.sys\n"), "`F.torch.sys` is the module `sys`"),
    ("missing torch function", module("    torch.sigmoidd(beta)\n"), "`torch.sigmoidd` does not exist"),
    ("from-import of forbidden name", module(top="from torch import load\n"), "`.load` is not allowed"),
    ("module passed around", module("    m = torch\n"), "the module `torch` may only be used as `torch.<function>`"),
    ("module rebound", module("    torch = None\n"), "do not rebind the module name `torch`"),
    ("raw memory", module("    policy_chosen_logps.untyped_storage()\n"), "`.untyped_storage` is not allowed"),
    ("backward inside loss", module("    policy_chosen_logps.sum().backward()\n"), "`.backward` is not allowed"),
    ("format string", module("    '{0}'.format(beta)\n"), "`.format` is not allowed"),
    ("dunder in string", module("    x = '{0.__class__}'\n"), "string constants may not contain '__'"),
    (
        "attribute assignment",
        module("    torch.sigmoid = torch.tanh\n"),
        "assigning or deleting the attribute `.sigmoid`",
    ),
    ("class", module(top="class A:\n    pass\n"), "classes are not allowed"),
    ("decorator", module(top="@staticmethod\ndef _f(x):\n    return x\n"), "decorators are not allowed"),
    ("global statement", module("    global X\n", top="X = 1\n"), "`global` is not allowed"),
    ("generator", module("    yield beta\n"), "generators (yield) are not allowed"),
    ("endless loop", module("    while True:\n        pass\n"), "this `while` loop never ends"),
    (
        "generator frame",
        module("    (x for x in []).gi_frame.f_builtins['eval']('1')\n"),
        "`.gi_frame` reaches interpreter frames",
    ),
    (
        "torch class",
        module("    torch.PyTorchFileWriter('x.pt')\n"),
        "`torch.PyTorchFileWriter` is a class candidates may not use",
    ),
    ("nn.Module", module("    torch.nn.Module()\n"), "`torch.nn.Module` is a class"),
    ("TorchScript loader", module("    torch.import_ir_module\n"), "`.import_ir_module` is not allowed"),
    (
        "match statement",
        module("    match beta:\n        case torch.Tensor(grad=g):\n            pass\n"),
        "`match` statements are not allowed",
    ),
]


@pytest.mark.parametrize(("rule", "source", "fragment"), RULES, ids=[rule for rule, _, _ in RULES])
def test_rule(rule: str, source: str, fragment: str) -> None:
    errors = errors_of(source)
    assert any(fragment in error for error in errors), f"{rule}: {errors}"


def test_value_classes_are_allowed() -> None:
    assert errors_of(module("    eps = torch.finfo(torch.float32).eps\n    isinstance(beta, torch.Tensor)\n")) == []


def test_while_loop_with_break_is_allowed() -> None:
    assert errors_of(module("    while True:\n        break\n")) == []


def test_renamed_parameters_only_warn() -> None:
    result = check_policy(HEADER + "def loss(pc, pr, rc, rr, beta):\n    return pc - pr\n")
    assert result.errors == []
    assert "passed positionally" in result.warnings[0]


def test_errors_carry_line_numbers() -> None:
    assert errors_of(module("    eval('1')\n"))[0].startswith("line 6: ")
