"""The static policy's allowlist: every name a candidate loss may reach, in one place.

A candidate is untrusted Python written by a model (docs/DESIGN.md, "Checking a candidate"). A denylist of what it
may not touch was escaped twice: a legacy storage's ``.type("builtins.x")`` imports any dotted name, and
``import torch as __builtins__`` makes every bare name resolve in torch's namespace. So the policy
(``policy.py``) refuses everything that is not named here. A name is on a list only if it is

- pure: it returns a new value and changes nothing it was given (no in-place method, nothing ending in ``_``;
  ``out=``, ``inplace=``, ``x[i] = v`` and ``x += y`` are refused by ``policy.py`` as syntax);
- stateless and deterministic: the same inputs give the same output on every call, whatever happened before
  (no random numbers, no uninitialised memory such as ``torch.empty``, no global settings such as
  ``set_default_dtype``, ``autocast_*`` or grad mode, no mutable module-level containers such as
  ``F.GRID_SAMPLE_INTERPOLATION_MODES``);
- confined to values: it reaches no storage (``storage``, ``storage_type``, ``untyped_storage``, ``data_ptr``),
  no part of the autograd graph (``grad``, ``grad_fn``, ``next_functions``, ``data``, ``backward``,
  ``register_hook``, ``register_prehook``, ``requires_grad``), no file, process, device setting or native
  code, and no class that builds any of these (``torch.Tensor(n)`` allocates uninitialised memory, a storage's
  ``.type(str)`` imports names). The only values that are not functions are dtypes (for ``.to(dtype)``),
  numeric constants and ``torch.finfo`` (for ``torch.finfo(x.dtype).eps``).

Tensor methods and attributes are checked by name only, on whatever expression they follow (the policy cannot
know a type statically), so a name is listed there only if it is harmless on every object a candidate can hold:
tensors, Python numbers, strings, and the tuples, lists and dicts it built itself, ``torch.Size``, dtypes,
devices, ``finfo`` and the ``(values, indices)`` pairs of ``max``/``sort``/``topk``. (``sort`` and ``add`` also
reorder or grow a Python list or set, but only one the call built: module-level lists cannot be read by code and
defaults are immutable, so nothing survives the call.)

``tests/evaluate/checking/test_policy.py`` checks that every name exists in the installed torch and is not in-place, and
that every library loss and every ``evolve`` proposal needs nothing else.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Iterable


def _names(text: str) -> frozenset[str]:
    """The whitespace-separated names of ``text``: long lists stay readable without one name per line."""
    return frozenset(text.split())


# ----------------------------------------------------------------------------------------------- imports

# The only imports, each under its canonical name: (module, alias); alias None means `import module` as is.
CANONICAL_IMPORTS: frozenset[tuple[str, str | None]] = frozenset(
    {("torch", None), ("torch.nn.functional", "F"), ("math", None)}
)
# The names the imports bind: reserved everywhere, never rebound, only ever used as `<module>.<name>`.
MODULE_NAMES: dict[str, str] = {"torch": "torch", "F": "torch.nn.functional", "math": "math"}
IMPORT_STATEMENTS: dict[str, str] = {
    "torch": "import torch",
    "F": "import torch.nn.functional as F",
    "math": "import math",
}
IMPORTS_TEXT = "`import torch`, `import torch.nn.functional as F` and `import math`"

# ------------------------------------------------------------------- shared by torch.* and tensor methods

_ELEMENTWISE = _names("""
    abs absolute acos acosh add arccos arccosh arcsin arcsinh arctan arctan2 arctanh asin asinh atan atan2 atanh
    ceil clamp clamp_max clamp_min clip copysign cos cosh deg2rad digamma div divide erf erfc erfinv exp exp2 expm1
    float_power floor floor_divide fmax fmin fmod frac heaviside hypot i0 lerp lgamma log log10 log1p log2
    logaddexp logaddexp2 logit maximum minimum mul multiply nan_to_num neg negative polygamma pow rad2deg
    reciprocal relu remainder round rsqrt sgn sigmoid sign signbit sin sinc sinh sqrt square sub subtract tan tanh
    true_divide trunc where xlogy
""")
_COMPARISONS = _names("""
    all allclose any eq equal ge greater greater_equal gt isclose isfinite isinf isnan isneginf isposinf le less
    less_equal logical_and logical_not logical_or logical_xor lt ne not_equal
""")
_REDUCTIONS = _names("""
    amax amin argmax argmin argsort count_nonzero cummax cummin cumprod cumsum diff dist kthvalue logcumsumexp
    logsumexp log_softmax max mean median min nanmean nanmedian nanquantile nansum norm prod quantile softmax sort
    std sum topk var
""")
_SHAPES = _names("""
    broadcast_to chunk clone detach diag diagonal dot flatten flip gather index_select inner is_floating_point
    masked_fill masked_select matmul mm narrow numel outer permute repeat_interleave reshape roll split squeeze t
    take take_along_dim tile transpose tril triu unbind unsqueeze
""")

# ------------------------------------------------------------------------------------------------ torch.*

# Functions called as `torch.<name>(...)`. Building tensors from values, but not torch.empty* (uninitialised
# memory) nor rand* (random).
TORCH_FUNCTIONS: frozenset[str] = (
    _ELEMENTWISE
    | _COMPARISONS
    | _REDUCTIONS
    | _SHAPES
    | _names("""
        arange as_tensor eye full full_like linspace logspace ones ones_like scalar_tensor tensor zeros zeros_like
        broadcast_tensors bucketize cat cdist concat concatenate cosine_similarity einsum finfo hstack logdet
        pairwise_distance promote_types result_type searchsorted stack std_mean trapezoid var_mean vstack
    """)
)
# Values of torch a candidate may name: dtypes for `.to(dtype)` and `dtype=`, and numeric constants.
TORCH_VALUES: frozenset[str] = _names("""
    bfloat16 bool double float float16 float32 float64 half int int32 int64 long e inf nan pi
""")
# torch.special.<name>: numerically careful versions of elementwise functions.
SPECIAL_FUNCTIONS: frozenset[str] = _names("""
    digamma entr erf erfc erfcx erfinv exp2 expit expm1 gammaln i0 i0e i1 i1e log1p log_ndtr log_softmax logit
    logsumexp multigammaln ndtr ndtri polygamma psi round sinc softmax xlog1py xlogy
""")
# Names usable only inside type annotations (`-> torch.Tensor`): naming a class there builds nothing.
TORCH_ANNOTATIONS: frozenset[str] = frozenset({"Tensor"})

# -------------------------------------------------------------------------------------------------- F.*

# Functions called as `F.<name>(...)`: activations and losses; not dropout, rrelu or gumbel_softmax (random).
F_FUNCTIONS: frozenset[str] = _names("""
    binary_cross_entropy binary_cross_entropy_with_logits celu cosine_similarity cross_entropy elu
    gaussian_nll_loss gelu glu hardshrink hardsigmoid hardswish hardtanh hinge_embedding_loss huber_loss kl_div
    l1_loss leaky_relu log_softmax logsigmoid margin_ranking_loss mish mse_loss nll_loss normalize one_hot pad
    pairwise_distance poisson_nll_loss relu relu6 selu silu smooth_l1_loss soft_margin_loss softmax softmin
    softplus softshrink softsign tanhshrink threshold
""")
# The most positional arguments a call may pass where the next parameter is `out` or `inplace` (a Python-level
# function such as `torch.norm(x, 2, 0, False, x)` or `F.relu(x, True)` would write into its input); given as a
# keyword, both are refused anyway. Checked against the installed signatures by a test.
POSITIONAL_LIMITS: dict[str, dict[str, int]] = {
    "torch": {"norm": 4},
    "F": {
        "celu": 2,
        "elu": 2,
        "hardsigmoid": 1,
        "hardswish": 1,
        "hardtanh": 3,
        "leaky_relu": 2,
        "mish": 1,
        "normalize": 4,
        "relu": 1,
        "relu6": 1,
        "selu": 1,
        "silu": 1,
        "threshold": 3,
    },
}

# ----------------------------------------------------------------------------------------------- math.*

MATH_FUNCTIONS: frozenset[str] = _names("""
    acos acosh asin asinh atan atan2 atanh cbrt ceil copysign cos cosh degrees dist erf erfc exp exp2 expm1 fabs
    floor fmod fsum gamma hypot isclose isfinite isinf isnan lgamma log log10 log1p log2 pow prod radians sin sinh
    sqrt tan tanh trunc
""")
MATH_CONSTANTS: frozenset[str] = _names("e inf nan pi tau")

# ---------------------------------------------------------------------------------------- x.<attribute>

# Methods called as `<expression>.<name>(...)`: the torch functions that are also tensor methods, conversions
# (`.to(dtype)`, `.float()`), shape queries and views, and `.detach()` (a stop-gradient, not a graph walk).
TENSOR_METHODS: frozenset[str] = (
    _ELEMENTWISE
    | _COMPARISONS
    | _REDUCTIONS
    | _SHAPES
    | _names("""
        bfloat16 bool contiguous dim double expand expand_as float half int item long ndimension nelement new_full
        new_ones new_tensor new_zeros repeat reshape_as size to type_as view view_as
    """)
)
# Plain attributes: a tensor's shape and kind, `torch.finfo`'s limits, the (values, indices) of max/sort/topk.
TENSOR_ATTRIBUTES: frozenset[str] = _names("""
    bits device dtype eps indices ndim resolution shape smallest_normal tiny values
""")

# --------------------------------------------------------------------------------------- Python builtins

# Builtins a loss may call: arithmetic on numbers and small loops. Not print (output), not isinstance or type
# (a loss is called with tensors and a float beta), nothing that executes, imports or looks up by name.
SAFE_BUILTINS: frozenset[str] = _names("""
    abs all any bool enumerate float int len list max min pow range round sum tuple zip
""")
# Exceptions a loss may raise or catch (input validation); not BaseException, which catches timeouts and exits.
SAFE_EXCEPTIONS: frozenset[str] = _names("""
    ArithmeticError AssertionError Exception FloatingPointError IndexError KeyError NotImplementedError
    OverflowError RuntimeError TypeError ValueError ZeroDivisionError
""")
# Every other builtin is refused, as a value and as a name to bind (site adds the interactive helpers).
UNSAFE_BUILTINS: frozenset[str] = (
    frozenset(dir(builtins)) | {"exit", "quit", "help", "copyright", "credits", "license"}
) - (SAFE_BUILTINS | SAFE_EXCEPTIONS)
# Builtins that may appear in annotations only (`-> tuple[float, str]`): naming a type there builds nothing.
ANNOTATION_BUILTINS: frozenset[str] = frozenset({"dict", "str"})

# ------------------------------------------------------------------------ why a name is refused (messages)

# The allowlist decides; these sets only say *why* a well-known name is refused, so the repair prompt can say so.
GRAPH_NAMES: frozenset[str] = _names("""
    autograd backward data enable_grad grad grad_fn inference_mode is_leaf next_functions no_grad register_hook
    register_post_accumulate_grad_hook register_prehook requires_grad retain_grad retains_grad set_grad_enabled
    variable
""")
MEMORY_NAMES: frozenset[str] = _names("""
    as_strided data_ptr from_file frombuffer load numpy save storage storage_offset storage_type tolist type
    untyped_storage
""")
NONDETERMINISTIC_NAMES: frozenset[str] = _names("""
    alpha_dropout bernoulli dropout dropout1d dropout2d dropout3d empty empty_like feature_alpha_dropout
    gumbel_softmax manual_seed multinomial new_empty normal poisson rand rand_like randint randint_like randn
    randn_like randperm rrelu seed
""")
# Where an attribute is looked up: a module name, `torch.special`, or "" for an attribute of any value.
NAMESPACES: dict[str, frozenset[str]] = {
    "torch": TORCH_FUNCTIONS | TORCH_VALUES,
    "F": F_FUNCTIONS,
    "math": MATH_FUNCTIONS | MATH_CONSTANTS,
    "torch.special": SPECIAL_FUNCTIONS,
    "": TENSOR_METHODS | TENSOR_ATTRIBUTES,
}
# What each namespace holds, and examples of what is allowed there (the full lists are long).
_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("torch functions", ("abs", "clamp", "exp", "log", "log1p", "logsumexp", "maximum", "sigmoid", "where")),
    "F": ("F functions", ("logsigmoid", "softplus", "relu", "softmax", "log_softmax", "mse_loss")),
    "math": ("math functions and constants", ("log", "exp", "sqrt", "log1p", "pi", "e")),
    "torch.special": ("torch.special functions", ("expit", "log_ndtr", "xlogy")),
    "": ("tensor methods and attributes", ("abs", "clamp", "detach", "exp", "log", "mean", "shape", "sum", "to")),
}


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def refusal(attr: str, namespace: str) -> str:
    """The sentence for a refused ``namespace.attr`` (``namespace`` "" for a value): why, and what to write."""
    kind, examples = _KINDS[namespace]
    if attr.endswith("_"):
        instead = f"; use `{attr[:-1]}` and assign the result" if attr[:-1] in NAMESPACES[namespace] else ""
        return f"`.{attr}` is not allowed: it modifies a tensor in place (names ending in `_` do){instead}."
    if namespace == "torch" and attr == "nn":
        return "`.nn` is not allowed: write `import torch.nn.functional as F` and use `F.<function>`."
    if attr in GRAPH_NAMES:
        reason = "it reaches the autograd graph (gradients, hooks, grad mode); use `.detach()` for a stop-gradient"
    elif attr in MEMORY_NAMES:
        reason = "it reaches files, raw memory or storages (to change a dtype, use `.to(dtype)`)"
    elif attr in NONDETERMINISTIC_NAMES:
        reason = "it is random or returns uninitialised memory, and a loss must be deterministic"
    elif attr.startswith(("set_", "get_", "autocast", "use_")) or attr.isupper():
        reason = "it reads or changes global state; a loss only computes values"
    else:
        subject = f"`{namespace}.{attr}` is" if namespace else "it is"
        close = difflib.get_close_matches(attr, sorted(NAMESPACES[namespace]), n=3, cutoff=0.8) if len(attr) > 3 else []
        hint = f"did you mean {_quoted(close)}?" if close else f"allowed {kind} include {_quoted(examples)}."
        return f"`.{attr}` is not allowed: {subject} not one of the allowed {kind} (pure, stateless math only); {hint}"
    return f"`.{attr}` is not allowed: {reason}."


__all__ = [
    "ANNOTATION_BUILTINS",
    "CANONICAL_IMPORTS",
    "F_FUNCTIONS",
    "GRAPH_NAMES",
    "IMPORTS_TEXT",
    "IMPORT_STATEMENTS",
    "MATH_CONSTANTS",
    "MATH_FUNCTIONS",
    "MEMORY_NAMES",
    "MODULE_NAMES",
    "NAMESPACES",
    "NONDETERMINISTIC_NAMES",
    "POSITIONAL_LIMITS",
    "SAFE_BUILTINS",
    "SAFE_EXCEPTIONS",
    "SPECIAL_FUNCTIONS",
    "TENSOR_ATTRIBUTES",
    "TENSOR_METHODS",
    "TORCH_ANNOTATIONS",
    "TORCH_FUNCTIONS",
    "TORCH_VALUES",
    "UNSAFE_BUILTINS",
    "refusal",
]
