"""Loss expressions for the evolutionary proposer: a small tree language and its text form (its Python rendering
is ``expression_rendering``).

A loss is a tree over the margin primitives (``rho`` = chosen_logratios - rejected_logratios, ``chosen``,
``rejected``, ``beta``, constants, and the length-aware ones: ``rho_ln``, the margin of per-token log-ratios
(LN-DPO); ``avg_margin``, the reference-free margin of per-token log-probs (SimPO); ``length_gap``, chosen minus
rejected tokens (R-DPO)) with unary ops (logsigmoid, softplus, sigmoid, clamp-safe exp, log1p_abs,
tanh, square, abs, relu, neg) and binary ops (add, sub, mul, div). Its text form is an S-expression, e.g.
``(neg (logsigmoid (mul beta rho)))``; labelled constants read ``tau=0.05`` and are the tunable
hyper-parameters. Rendered candidates carry that text in their docstring (``Expression: ...``), so a later
generation rebuilds the tree from an archived candidate without parsing Python.

``SEEDS`` are the library losses written as trees (DPO, hinge, IPO, SPPO-hard, BCO-pair, NCA-pair, APO-zero,
robust DPO, LRML, DPOP, SimPO, R-DPO), each following its file in ``candidates/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VARS = ("rho", "chosen", "rejected", "beta", "rho_ln", "avg_margin", "length_gap")
TENSOR_VARS = ("rho", "chosen", "rejected", "rho_ln", "avg_margin", "length_gap")
# Variables that need the completions' lengths: a tree with one of them renders a length-aware ``loss``.
LENGTH_VARS = ("rho_ln", "avg_margin", "length_gap")
# Unary op -> Python template. exp and division go through private helpers that keep them finite.
UNARY = {
    "logsigmoid": "F.logsigmoid({})",
    "softplus": "F.softplus({})",
    "sigmoid": "torch.sigmoid({})",
    "exp": "_safe_exp({})",
    "log1p_abs": "torch.log1p(torch.abs({}))",
    "tanh": "torch.tanh({})",
    "square": "torch.square({})",
    "abs": "torch.abs({})",
    "relu": "F.relu({})",
    "neg": "-{}",
}
BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}

# Tunable constants by label: (low, high). Mutations stay inside; eps < 0.5 keeps robust DPO's 1 - 2*eps > 0.
BOUNDS = {
    "tau": (0.01, 2.0),
    "lam": (0.0, 100.0),
    "margin": (0.0, 5.0),
    "eps": (0.0, 0.45),
    "w": (0.05, 0.95),
    "scale": (0.05, 20.0),
    "shift": (-2.0, 2.0),
}
MAX_NODES = 48  # bloat guard: a tree past this is resampled

DIV_EPS = 1e-3  # how far from zero a denominator is kept (checked here for scalars, clamped in rendered code)


class ExprError(ValueError):
    """Malformed expression text or a tree that cannot be rendered as a contract candidate."""


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Const:
    value: float
    label: str = ""  # "" = structural literal (the 1 of 1 - gate), never mutated


@dataclass(frozen=True)
class Unary:
    op: str
    child: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Var | Const | Unary | Binary


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary):
        return (node.child,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    return ()


def size(node: Node) -> int:
    return 1 + sum(size(c) for c in children(node))


def is_tensor(node: Node) -> bool:
    """Whether the node depends on the batch (else it is a Python float of beta and constants)."""
    if isinstance(node, Var):
        return node.name in TENSOR_VARS
    return any(is_tensor(c) for c in children(node))


def scalar_value(node: Node, beta: float) -> float:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Var) and node.name == "beta":
        return beta
    if isinstance(node, Binary) and not is_tensor(node):
        a, b = scalar_value(node.left, beta), scalar_value(node.right, beta)
        if node.op == "div":
            return a / b if b != 0 else float("inf")
        return a + b if node.op == "add" else a - b if node.op == "sub" else a * b
    raise ExprError(f"{to_text(node)} is not a scalar expression")


def structure_problems(node: Node) -> list[str]:
    """Rules a tree must follow to render as valid, finite code (the numeric self-check comes after)."""
    problems: list[str] = []
    if not is_tensor(node):
        problems.append("the loss does not depend on the log-probabilities")
    if size(node) > MAX_NODES:
        problems.append(f"{size(node)} nodes, more than {MAX_NODES}")
    stack = [node]
    while stack:
        current = stack.pop()
        stack.extend(children(current))
        if isinstance(current, Unary) and not is_tensor(current.child):
            problems.append(f"({current.op} ...) of a scalar")
        # Plain division by beta and constants: it must stay away from zero for any sensible beta.
        if (
            isinstance(current, Binary)
            and current.op == "div"
            and not is_tensor(current.right)
            and any(scalar_value(current.right, beta) < DIV_EPS for beta in (0.01, 0.1, 1.0, 10.0))
        ):
            problems.append(f"denominator {to_text(current.right)} can reach zero")
    return problems


# -- text form --------------------------------------------------------------------------------------------


def number_text(value: float) -> str:
    """A constant as the text form and the rendered code write it."""
    return repr(float(value))


def to_text(node: Node) -> str:
    if isinstance(node, Var):
        return node.name
    if isinstance(node, Const):
        return f"{node.label}={number_text(node.value)}" if node.label else number_text(node.value)
    if isinstance(node, Unary):
        return f"({node.op} {to_text(node.child)})"
    return f"({node.op} {to_text(node.left)} {to_text(node.right)})"


def from_text(text: str) -> Node:
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    position = 0

    def parse() -> Node:
        nonlocal position
        if position >= len(tokens):
            raise ExprError("expression ends early")
        token = tokens[position]
        position += 1
        if token == "(":
            if position >= len(tokens):
                raise ExprError("expression ends early")
            op = tokens[position]
            position += 1
            args = []
            while position < len(tokens) and tokens[position] != ")":
                args.append(parse())
            if position >= len(tokens):
                raise ExprError("unbalanced parentheses")
            position += 1
            if op in UNARY and len(args) == 1:
                return Unary(op, args[0])
            if op in BINARY and len(args) == 2:
                return Binary(op, args[0], args[1])
            raise ExprError(f"({op} ...) with {len(args)} argument(s) is not an operation")
        if token == ")":
            raise ExprError("unexpected ')'")
        if token in VARS:
            return Var(token)
        label, _, number = token.rpartition("=")
        if label and label not in BOUNDS:
            raise ExprError(f"unknown constant label {label!r}")
        try:
            return Const(float(number), label)
        except ValueError:
            raise ExprError(f"unknown token {token!r}") from None

    node = parse()
    if position != len(tokens):
        raise ExprError("text after the expression")
    return node


def expression_from_code(code: str) -> Node | None:
    """The tree of a candidate this module rendered (its ``Expression:`` docstring line), else None."""
    match = re.search(r"^Expression: (.+)$", code, re.MULTILINE)
    if not match:
        return None
    try:
        return from_text(match.group(1))
    except ExprError:
        return None


# -- the library as trees ---------------------------------------------------------------------------------

RHO, CHOSEN, REJECTED, BETA, RHO_LN, AVG_MARGIN, LENGTH_GAP = (Var(n) for n in VARS)


def k(value: float, label: str = "") -> Const:
    return Const(float(value), label)


def u(op: str, child: Node) -> Unary:
    return Unary(op, child)


def b(op: str, left: Node, right: Node) -> Binary:
    return Binary(op, left, right)


# Written in the tree language itself (short and reviewable); a test checks each against its library file.
_X = "(mul beta rho)"  # the DPO logit beta * rho
_GATE = f"(sigmoid (div {_X} tau=0.05))"
_SEED_TEXT = {
    "dpo": f"(neg (logsigmoid {_X}))",
    "hinge": f"(relu (sub margin=1.0 {_X}))",
    "ipo": "(square (sub rho (div 1.0 (mul 2.0 beta))))",
    "sppo_hard": "(add (square (sub chosen (div 0.5 beta))) (square (add rejected (div 0.5 beta))))",
    # BCO-pair without the running reward mean delta (a batch statistic the tree language leaves out).
    "bco_pair": "(add (neg (logsigmoid (mul beta chosen))) (neg (logsigmoid (neg (mul beta rejected)))))",
    "nca_pair": (
        "(sub (sub (neg (logsigmoid (mul beta chosen))) (mul 0.5 (logsigmoid (neg (mul beta chosen)))))"
        " (mul 0.5 (logsigmoid (neg (mul beta rejected)))))"
    ),
    "apo_zero": "(add (sub 1.0 (sigmoid (mul beta chosen))) (sigmoid (mul beta rejected)))",
    "robust_dpo": (
        f"(div (add (mul (neg (logsigmoid {_X})) (sub 1.0 eps=0.1)) (mul (logsigmoid (neg {_X})) eps=0.1))"
        " (sub 1.0 (mul 2.0 eps=0.1)))"
    ),
    "lrml": f"(add (mul (neg (logsigmoid {_X})) (sub 1.0 {_GATE})) (mul (exp (neg {_X})) {_GATE}))",
    "dpop": "(neg (logsigmoid (mul beta (sub rho (mul lam=50.0 (relu (neg chosen)))))))",
    # The length-aware ones (ln_dpo's scale of 50 lies outside the tree language's SCALE bounds).
    "simpo": "(neg (logsigmoid (mul (mul scale=20.0 beta) (sub avg_margin margin=0.5))))",
    "r_dpo": "(neg (logsigmoid (add (mul beta rho) (mul lam=0.05 length_gap))))",
}


SEEDS: dict[str, Node] = {name: from_text(text) for name, text in _SEED_TEXT.items()}

__all__ = [
    "BINARY",
    "BOUNDS",
    "DIV_EPS",
    "LENGTH_VARS",
    "SEEDS",
    "UNARY",
    "Binary",
    "Const",
    "ExprError",
    "Node",
    "Unary",
    "Var",
    "children",
    "expression_from_code",
    "from_text",
    "is_tensor",
    "number_text",
    "size",
    "structure_problems",
    "to_text",
]
