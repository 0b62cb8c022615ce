"""Python rendering of a loss expression (``expressions``): the contract-format candidate file of a tree.

The file carries the tree's text form in its docstring (``Expression: ...``), so a later generation rebuilds the
tree from an archived candidate without parsing Python; ``exp`` and division by a tensor go through helpers that
keep them finite; long tensor subexpressions get named lines of their own.
"""

from __future__ import annotations

import json
import textwrap

from lossforge.discovery.proposers.expressions import (
    BINARY,
    DIV_EPS,
    LENGTH_VARS,
    UNARY,
    Const,
    ExprError,
    Node,
    Unary,
    Var,
    children,
    is_tensor,
    number_text,
    structure_problems,
    to_text,
)

_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2}
_NEG_PREC, _ATOM_PREC = 3, 10
_EXP_CLAMP = 30.0  # exp(30) ~ 1e13: finite in float32/bf16 with room for a product with another term

_VAR_CODE = {
    "rho": "rho",
    "chosen": "chosen_logratios",
    "rejected": "rejected_logratios",
    "beta": "beta",
    "rho_ln": "rho_ln",
    "avg_margin": "avg_margin",
    "length_gap": "length_gap",
}
# The lines that define each length-aware variable; lengths can be 0 (a truncated completion), hence the clamp.
_LENGTH_LINES = {
    "rho_ln": "rho_ln = chosen_logratios / chosen_tokens - rejected_logratios / rejected_tokens  # (B,)",
    "avg_margin": "avg_margin = policy_chosen_logps / chosen_tokens - policy_rejected_logps / rejected_tokens  # (B,)",
    "length_gap": "length_gap = chosen_lengths - rejected_lengths  # (B,)",
}
_TEMP_MIN_CHARS = 56  # tensor subexpressions longer than this get a named line of their own


class _Renderer:
    def __init__(self) -> None:
        self.constants: dict[tuple[str, float], str] = {}
        self.lines: list[str] = []
        self.helpers: set[str] = set()

    def constant(self, const: Const) -> str:
        key = (const.label, const.value)
        if key not in self.constants:
            base, taken = const.label.upper(), set(self.constants.values())
            name, n = base, 2
            while name in taken:
                name, n = f"{base}_{n}", n + 1
            self.constants[key] = name
        return self.constants[key]

    def render(self, node: Node, top: bool = False) -> tuple[str, int]:
        text, prec = self._render(node)
        if not top and prec != _ATOM_PREC and len(text) > _TEMP_MIN_CHARS and is_tensor(node):
            temp = f"term{len(self.lines) + 1}"
            self.lines.append(f"{temp} = {text}  # (B,)")
            return temp, _ATOM_PREC
        return text, prec

    def _render(self, node: Node) -> tuple[str, int]:
        if isinstance(node, Var):
            return _VAR_CODE[node.name], _ATOM_PREC
        if isinstance(node, Const):
            if node.label:
                return self.constant(node), _ATOM_PREC
            return number_text(node.value), (_NEG_PREC if node.value < 0 else _ATOM_PREC)
        if isinstance(node, Unary):
            child, child_prec = self.render(node.child)
            if node.op == "neg":
                return "-" + (child if child_prec >= _NEG_PREC else f"({child})"), _NEG_PREC
            if node.op == "exp":
                self.helpers.add("exp")
            return UNARY[node.op].format(child), _ATOM_PREC
        left, left_prec = self.render(node.left)
        right, right_prec = self.render(node.right)
        if node.op == "div" and is_tensor(node.right):
            self.helpers.add("div")
            return f"_safe_div({left}, {right})", _ATOM_PREC
        prec = _PREC[node.op]
        if left_prec < prec:
            left = f"({left})"
        if right_prec < prec or right_prec == _NEG_PREC or (right_prec == prec and node.op in ("sub", "div")):
            right = f"({right})"
        return f"{left} {BINARY[node.op]} {right}", prec


_HELPERS = {
    "exp": (
        "EXP_CLAMP = " + number_text(_EXP_CLAMP),
        (
            "def _safe_exp(x):\n"
            "    # exp overflows float32 past ~88 (the published LRML does at large margins); clamp keeps it finite.\n"
            "    return torch.exp(torch.clamp(x, max=EXP_CLAMP))"
        ),
    ),
    "div": (
        "DIV_EPS = " + number_text(DIV_EPS),
        (
            "def _safe_div(numerator, denominator):\n"
            "    # Keeps |denominator| >= DIV_EPS with its sign, so the quotient and its gradient stay finite.\n"
            "    positive = denominator.clamp(min=DIV_EPS)\n"
            "    negative = denominator.clamp(max=-DIV_EPS)\n"
            "    return numerator / torch.where(denominator >= 0, positive, negative)"
        ),
    ),
}


def render(node: Node, *, name: str, thought: str, parents: tuple[int, ...]) -> str:
    """Contract-format source of ``node``: docstring (thought + expression), metadata, constants, ``loss``."""
    problems = structure_problems(node)
    if problems:
        raise ExprError("; ".join(problems))
    renderer = _Renderer()
    body, _ = renderer.render(node, top=True)
    thought = " ".join(thought.replace('"""', "'''").replace("\\", "/").split())
    doc = textwrap.fill(f"{name}: {thought}", width=110)
    lines = [
        f'"""{doc}',
        "",
        f"Expression: {to_text(node)}",
        "Written by lossforge's evolutionary proposer (no LLM); rho = chosen_logratios - rejected_logratios.",
        '"""',
        "",
        "import torch",
        "import torch.nn.functional as F",
        "",
        f"NAME = {json.dumps(name)}",
        f"DESCRIPTION = {json.dumps(thought)}",
        'ORIGIN = "evolve"',
        f"PARENTS = {json.dumps([str(p) for p in parents])}",
    ]
    constants = [f"{const_name} = {number_text(value)}" for (_, value), const_name in renderer.constants.items()]
    constants += [_HELPERS[h][0] for h in sorted(renderer.helpers)]
    if constants:
        lines += ["", *constants]
    for helper in sorted(renderer.helpers):
        lines += ["", "", _HELPERS[helper][1]]
    used = {n.name for n in _walk(node) if isinstance(n, Var)}
    lengths = [name for name in LENGTH_VARS if name in used]
    parameters = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"
    signature = f"def loss({parameters}):"
    if lengths:
        signature = f"def loss(\n    {parameters},\n    chosen_lengths,\n    rejected_lengths,\n):"
    lines += [
        "",
        "",
        signature,
        "    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)",
        "    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)",
        "    rho = chosen_logratios - rejected_logratios  # (B,)",
    ]
    if lengths:
        lines += [
            "    chosen_tokens = chosen_lengths.clamp(min=1.0)  # (B,) a completion may be truncated to 0 tokens",
            "    rejected_tokens = rejected_lengths.clamp(min=1.0)  # (B,)",
            *(f"    {_LENGTH_LINES[name]}" for name in lengths),
        ]
    lines += [*(f"    {line}" for line in renderer.lines), f"    return {body}"]
    return "\n".join(lines) + "\n"


def _walk(node: Node) -> list[Node]:
    return [node, *(inner for child in children(node) for inner in _walk(child))]


__all__ = ["render"]
