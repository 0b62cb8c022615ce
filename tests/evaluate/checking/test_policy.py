"""Static policy: one focused test per screening rule, matching the message the LLM will read; the allowlist is
checked against the installed torch, the library and the evolve proposer."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from lossforge.candidates import load_library
from lossforge.discovery.proposers.base import HistoryEntry, ProposalRequest
from lossforge.discovery.proposers.evolve import EvolveProposer
from lossforge.discovery.proposers.expressions import SEEDS
from lossforge.evaluate.checking import allowlist
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
    """A library loss that needs a name off the allowlist fails here: add the name to allowlist.py if it is pure."""
    assert errors_of(load_library(include_user=False)[name].source) == []


@pytest.mark.usefixtures("one_torch_thread")
def test_evolve_proposals_pass() -> None:
    """Every operator and helper the evolve proposer renders stays on the allowlist, with and without history."""
    history = tuple(
        HistoryEntry(id=i, name=name, status="ok", code=load_library(include_user=False)[name].source, score=1.0 / i)
        for i, name in enumerate(sorted(SEEDS), start=1)
    )
    operations = set()
    for seed in range(30):
        request = ProposalRequest(
            generation=1 + seed % 3, index=seed % 7, seed=seed, history=history if seed % 2 else (), task="t"
        )
        proposal = EvolveProposer().propose(request)
        operations.add(proposal.extra["operation"])
        assert errors_of(proposal.code) == [], proposal.code
    assert {"constant", "swap", "wrap", "gate"} <= operations


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
    # imports: three, under their canonical names
    ("disallowed import", module(top="import os\n"), "importing `os` is not allowed"),
    ("relative import", module(top="from . import x\n"), "importing `.` with `from ... import` is not allowed"),
    ("star import", module(top="from math import *\n"), "importing `math` with `from ... import` is not allowed"),
    ("from-import", module(top="from torch import load\n"), "importing `torch` with `from ... import`"),
    ("non-canonical alias", module(top="import torch as T\n"), "under its canonical name, `import torch`"),
    ("F without alias", module(top="import torch.nn.functional\n"), "`import torch.nn.functional as F`, and"),
    ("math alias", module(top="import math as m\n"), "under its canonical name, `import math`"),
    ("dunder alias", module(top="import torch as __builtins__\n"), "`__builtins__` is not allowed: dunder"),
    ("used, not imported", module().replace("import math\n", "") + "X = math.pi\n", "`math` is used but not"),
    ("import inside function", module("    import math\n"), "imports are allowed only at the top"),
    # module level
    ("module-level call", module(top="torch.manual_seed(0)\n"), "is not allowed at module level"),
    ("module-level tensor", module(top="W = torch.ones(3)\n"), "module-level values must be numeric constants"),
    ("module-level if", module(top="if True:\n    X = 1\n"), "is not allowed at module level"),
    ("module-level list", module(top="WEIGHTS = [0.5, 0.5]\n"), "make `WEIGHTS` a tuple"),
    ("list through a name", module(top='PARENTS = ["dpo"]\nP = PARENTS\n'), "make `P` a tuple"),
    ("rebinding loss", module(top="loss = 1\n"), "do not rebind `loss`"),
    # module names are never rebound, and only used as module.name
    ("module rebound", module("    torch = None\n"), "do not rebind the module name `torch`"),
    ("module augmented", module("    torch += 1\n"), "do not rebind the module name `torch`"),
    ("module as for target", module("    for F in range(2):\n        pass\n"), "module name `F` (here as a var"),
    ("module as with target", module("    with beta as math:\n        pass\n"), "module name `math` (here as a"),
    (
        "module as except target",
        module("    try:\n        pass\n    except ValueError as torch:\n        pass\n"),
        "module name `torch` (here as an exception variable)",
    ),
    ("module by walrus", module("    (torch := beta)\n"), "do not rebind the module name `torch`"),
    ("module as parameter", module(top="def _f(torch):\n    return 1\n"), "`torch` (here as a parameter)"),
    ("module as lambda parameter", module("    f = lambda F: F\n"), "`F` (here as a parameter)"),
    ("module in comprehension", module("    [math for math in range(3)]\n"), "`math` (here as a variable)"),
    ("module as function", module("    def torch():\n        return 1\n"), "`torch` (here as a function)"),
    ("module deleted", module("    del torch\n"), "do not rebind the module name `torch`"),
    ("module passed around", module("    m = torch\n"), "the module `torch` may only be used as `torch.<function>`"),
    ("global statement", module("    global X\n", top="X = 1\n"), "`global` is not allowed"),
    ("module made global", module("    global torch\n"), "`global` is not allowed"),
    # builtins: a small safe set
    ("forbidden builtin open", module("    open('x', 'w')\n"), "`open` is not allowed"),
    ("forbidden builtin eval", module("    eval('1')\n"), "`eval` is not allowed"),
    ("forbidden builtin getattr", module("    getattr(torch, 'lo' + 'ad')\n"), "`getattr` is not allowed"),
    ("forbidden builtin print", module("    print(beta)\n"), "`print` is not allowed"),
    ("isinstance", module("    isinstance(beta, float)\n"), "`isinstance` is not allowed"),
    ("BaseException", module("    try:\n        pass\n    except BaseException:\n        pass\n"), "`BaseExc"),
    ("builtin name rebound", module("    input = beta\n"), "`input` is the name of a Python builtin"),
    # dunders anywhere
    ("dunder name", module("    __builtins__['eval']('1')\n"), "`__builtins__` is not allowed"),
    ("dunder attribute", module("    policy_chosen_logps.__class__\n"), "`.__class__` is private or a dunder"),
    ("private attribute", module("    torch._C\n"), "`._C` is private or a dunder"),
    ("dunder keyword", module("    F.softplus(beta, __x=1)\n"), "`__x` is not allowed: dunder names"),
    ("dunder parameter", module(top="def _f(__x):\n    return 1\n"), "`__x` is not allowed: dunder names"),
    ("dunder in string", module("    x = '{0.__class__}'\n"), "string constants may not contain '__'"),
    # torch, F and math: named functions only
    ("torch namespace", module("    torch.load('x.pt')\n"), "`.load` is not allowed: it reaches files"),
    ("nested namespace", module("    torch.nn.utils\n"), "`.nn` is not allowed: write `import torch.nn.functional"),
    ("module re-exported by torch", module("    torch.os.getcwd()\n"), "`torch.os` is not one of the allowed torch"),
    ("module through F", module("    F.torch.sys\n"), "`F.torch` is not one of the allowed F functions"),
    ("typo", module("    torch.sigmoidd(beta)\n"), "`torch.sigmoidd` is not one of the allowed torch functions"),
    ("typo suggestion", module("    torch.sigmoidd(beta)\n"), "did you mean `sigmoid`"),
    ("global state", module("    torch.set_default_dtype(torch.float64)\n"), "`.set_default_dtype` is not allowed"),
    ("autocast state", module("    torch.autocast_increment_nesting()\n"), "reads or changes global state"),
    ("mutable module constant", module("    F.GRID_SAMPLE_INTERPOLATION_MODES\n"), "reads or changes global state"),
    ("seeding", module("    torch.manual_seed(0)\n"), "`.manual_seed` is not allowed"),
    ("random numbers", module("    torch.rand(3)\n"), "`.rand` is not allowed: it is random"),
    ("random dropout", module("    F.dropout(policy_chosen_logps)\n"), "`.dropout` is not allowed: it is random"),
    ("uninitialised memory", module("    torch.empty(3)\n"), "returns uninitialised memory"),
    ("torch class", module("    torch.PyTorchFileWriter('x.pt')\n"), "`torch.PyTorchFileWriter` is not one of"),
    ("Tensor constructor", module("    torch.Tensor(3)\n"), "`torch.Tensor` is not one of the allowed torch"),
    ("nn.Module", module("    torch.nn.Module()\n"), "`.nn` is not allowed"),
    ("TorchScript loader", module("    torch.import_ir_module\n"), "`.import_ir_module` is not allowed"),
    ("torch.special", module("    torch.special.zeta(beta, 1.0)\n"), "`torch.special.zeta` is not one of the"),
    ("math function", module("    math.factorial(3)\n"), "`math.factorial` is not one of the allowed math"),
    # tensor methods and attributes: named ones only
    ("storage", module("    policy_chosen_logps.storage_type()\n"), "`.storage_type` is not allowed: it reaches"),
    ("storage .type", module("    policy_chosen_logps.type('torch.DoubleTensor')\n"), "`.type` is not allowed"),
    ("raw memory", module("    policy_chosen_logps.untyped_storage()\n"), "`.untyped_storage` is not allowed"),
    ("numpy", module("    policy_chosen_logps.numpy()\n"), "`.numpy` is not allowed"),
    ("graph attribute", module("    policy_chosen_logps.grad_fn\n"), "`.grad_fn` is not allowed: it reaches the auto"),
    ("graph walk", module("    beta.next_functions\n"), "`.next_functions` is not allowed: it reaches the auto"),
    ("gradient", module("    policy_chosen_logps.grad\n"), "`.grad` is not allowed: it reaches the autograd"),
    ("data alias", module("    policy_chosen_logps.data\n"), "`.data` is not allowed: it reaches the autograd"),
    ("hook", module("    policy_chosen_logps.register_hook(abs)\n"), "`.register_hook` is not allowed"),
    ("prehook", module("    beta.register_prehook(abs)\n"), "`.register_prehook` is not allowed"),
    ("backward inside loss", module("    policy_chosen_logps.sum().backward()\n"), "`.backward` is not allowed"),
    ("requires_grad", module("    policy_chosen_logps.requires_grad\n"), "`.requires_grad` is not allowed"),
    ("grad mode", module("    torch.no_grad()\n"), "`.no_grad` is not allowed: it reaches the autograd"),
    ("format string", module("    '{0}'.format(beta)\n"), "`.format` is not allowed"),
    ("first failing link only", module("    policy_chosen_logps.grad_fn.next_functions\n"), "`.grad_fn`"),
    (
        "generator frame",
        module("    (x for x in []).gi_frame.f_builtins['eval']('1')\n"),
        "`.gi_frame` is not allowed: it is not one of the allowed tensor methods",
    ),
    # nothing changes a value in place
    ("in-place method", module("    policy_chosen_logps.add_(1.0)\n"), "in place (names ending in `_` do); use `add`"),
    ("in-place F", module("    F.relu_(policy_chosen_logps)\n"), "`.relu_` is not allowed: it modifies a tensor"),
    ("item assignment", module("    policy_chosen_logps[0] = 0.0\n"), "item assignment (`x[...] = v`)"),
    ("item deletion", module("    x = [1]\n    del x[0]\n"), "item assignment (`x[...] = v`)"),
    ("augmented assignment", module("    x = beta\n    x += 1\n"), "augmented assignment (`x += y`)"),
    ("out keyword", module("    torch.exp(policy_chosen_logps, out=policy_chosen_logps)\n"), "`out=` writes into"),
    ("inplace keyword", module("    F.relu(policy_chosen_logps, inplace=True)\n"), "`inplace=` writes into"),
    ("inplace positional", module("    F.relu(policy_chosen_logps, True)\n"), "`F.relu` takes at most 1 positional"),
    ("out positional", module("    torch.norm(beta, 2, 0, False, beta)\n"), "`torch.norm` takes at most 4"),
    ("starred into limit", module("    F.elu(*(beta, 1.0, True))\n"), "`F.elu` takes at most 2 positional"),
    ("limited function aliased", module("    r = F.relu\n"), "call `F.relu(...)` directly"),
    ("double-star unpacking", module("    torch.exp(beta, **{'out': beta})\n"), "`**` unpacking in a call"),
    (
        "attribute assignment",
        module("    torch.sigmoid = torch.tanh\n"),
        "assigning or deleting the attribute `.sigmoid`",
    ),
    # no state between calls
    ("mutable default", module(top="def _f(x, state=[]):\n    return x\n"), "default value of `state` must be an imm"),
    ("dict default", module(top="def _f(x, *, cache={}):\n    return x\n"), "default value of `cache` must be"),
    ("lambda default", module("    f = lambda x, s=[]: x\n"), "default value of `s` must be an immutable"),
    ("list default by name", module(top='PARENTS = ["a"]\ndef _f(x, p=PARENTS):\n    return x\n'), "of `p` must be"),
    (
        "metadata read in a function",
        module("    PARENTS.sort()\n", top='PARENTS = ["b", "a"]\n'),
        "`PARENTS` is metadata",
    ),
    # other syntax
    ("class", module(top="class A:\n    pass\n"), "classes are not allowed"),
    ("decorator", module(top="@staticmethod\ndef _f(x):\n    return x\n"), "decorators are not allowed"),
    ("nonlocal", module("    def _g():\n        nonlocal beta\n"), "`nonlocal` is not allowed"),
    ("generator", module("    yield beta\n"), "generators (yield) are not allowed"),
    ("async", module(top="async def _f():\n    return 1\n"), "async functions are not allowed"),
    ("endless loop", module("    while True:\n        pass\n"), "this `while` loop never ends"),
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


def test_finfo_dtypes_and_constants_are_allowed() -> None:
    body = (
        "    eps = torch.finfo(policy_chosen_logps.dtype).eps\n"
        "    x = policy_chosen_logps.to(torch.float64) * math.pi + torch.inf * 0\n"
        "    y = x.new_zeros(()) + torch.tensor(eps, dtype=torch.float32, device=x.device)\n"
    )
    assert errors_of(module(body)) == []


LLM_STYLE = '''"""Margin-scaled logistic loss (as an LLM writes one: annotations, helpers, validation, a loop)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NAME = "scaled_logistic"
DESCRIPTION = "Logistic loss on the margin, scaled by its detached batch spread."
ORIGIN = "llm:test"
PARENTS = ["dpo"]
TAU: float = 0.05
WEIGHTS = (0.7, 0.3)


def _log1mexp(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """log(1 - exp(-x)) for x > 0, stable on both sides of log 2."""
    x = torch.clamp(x, min=eps)
    return torch.where(x < math.log(2), torch.log(-torch.expm1(-x)), torch.log1p(-torch.exp(-x)))


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.dim() != 1:
        raise ValueError("expected log-probs of shape (batch,)")
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    eps = torch.finfo(logits.dtype).eps
    spread = logits.detach().std() if logits.numel() > 1 else logits.new_ones(())
    scale = spread.clamp(min=eps).to(logits.dtype)
    terms = [w * term for w, term in zip(WEIGHTS, (-F.logsigmoid(logits), F.softplus(-logits / scale)))]
    total = sum(terms)
    for index in range(len(WEIGHTS)):
        total = total + 0.0 * index
    try:
        gate = torch.special.expit(logits / TAU)
    except RuntimeError:
        gate = torch.sigmoid(logits / TAU)
    bonus = (lambda x, k=2.0: x**k)(gate)  # (B,)
    best = logits.max(dim=0).values
    hinge = F.relu(1.0 - logits, inplace=False) + 0.0 * _log1mexp(bonus + 1.0) + 0.0 * best
    return torch.where(logits > 0, total, (1 - gate) * total + gate * hinge)
'''


def test_llm_style_candidate_passes() -> None:
    """What a capable model writes stays allowed: annotations with `torch.Tensor`, tuples, safe builtins,
    `raise`/`except ValueError`, lambdas with constant defaults, `torch.special`, `.detach()`, finfo."""
    assert errors_of(LLM_STYLE) == []


def test_refusal_says_what_is_allowed() -> None:
    [error] = errors_of(module("    policy_chosen_logps.frobnicate()\n"))
    assert "allowed tensor methods and attributes include `abs`, `clamp`, `detach`" in error
    assert error.startswith("line 6: `.frobnicate` is not allowed")


def test_safe_builtins_may_be_rebound_and_used() -> None:
    body = "    n = len(policy_chosen_logps) + int(max(1.0, float(beta))) + round(abs(-beta))\n    sum = n\n"
    assert errors_of(module(body)) == []


# ------------------------------------------------------------------------------- the allowlist itself


def _torch_names() -> dict[str, tuple[object, frozenset[str]]]:
    return {
        "torch": (torch, allowlist.TORCH_FUNCTIONS | allowlist.TORCH_VALUES),
        "torch.special": (torch.special, allowlist.SPECIAL_FUNCTIONS),
        "F": (F, allowlist.F_FUNCTIONS),
        "math": (math, allowlist.MATH_FUNCTIONS | allowlist.MATH_CONSTANTS),
        "Tensor": (torch.Tensor, allowlist.TENSOR_METHODS),
    }


@pytest.mark.parametrize("namespace", ["torch", "torch.special", "F", "math", "Tensor"])
def test_every_allowed_name_exists_and_is_not_in_place(namespace: str) -> None:
    owner, names = _torch_names()[namespace]
    assert sorted(name for name in names if not hasattr(owner, name)) == []
    assert sorted(name for name in names if name.endswith("_") or name.startswith("_")) == []


def test_attributes_exist_on_the_values_a_candidate_holds() -> None:
    values = (torch.zeros(2, 2), torch.finfo(torch.float32), torch.zeros(2).max(dim=0))
    assert sorted(a for a in allowlist.TENSOR_ATTRIBUTES if not any(hasattr(v, a) for v in values)) == []


def test_refusal_reasons_never_name_an_allowed_name() -> None:
    reasons = allowlist.GRAPH_NAMES | allowlist.MEMORY_NAMES | allowlist.NONDETERMINISTIC_NAMES
    allowed_names = set().union(*allowlist.NAMESPACES.values())
    assert sorted(reasons & allowed_names) == []


@pytest.mark.parametrize("namespace", ["torch", "F"])
def test_positional_limits_match_the_installed_signatures(namespace: str) -> None:
    """Every Python-level function that takes `out` or `inplace` positionally has a limit just before it."""
    owner, names = _torch_names()[namespace]
    limits = allowlist.POSITIONAL_LIMITS[namespace]
    found = {}
    for name in sorted(names):
        try:
            parameters = list(inspect.signature(getattr(owner, name)).parameters.values())
        except (TypeError, ValueError):  # a C builtin: `out` is keyword-only there
            continue
        for position, parameter in enumerate(parameters):
            if parameter.name in ("out", "inplace") and parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
                found[name] = position
                break
    assert found == limits


def test_while_loop_with_break_is_allowed() -> None:
    assert errors_of(module("    while True:\n        break\n")) == []


def test_renamed_parameters_only_warn() -> None:
    result = check_policy(HEADER + "def loss(pc, pr, rc, rr, beta):\n    return pc - pr\n")
    assert result.errors == []
    assert "passed positionally" in result.warnings[0]


def test_errors_carry_line_numbers() -> None:
    assert errors_of(module("    eval('1')\n"))[0].startswith("line 6: ")
