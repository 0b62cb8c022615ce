"""The evolutionary proposer (``evolve``): mutation and crossover of loss expressions, no network, no cost.

It is the offline default and the ablation baseline for the LLM proposer. Parents come from the history the
loop shows (best scores first; a parent's archive id goes into ``PARENTS``) or, when the history has none
usable, from the library seeds in ``evolve_expr.SEEDS``. One proposal applies one operator:

- ``constant``: rescale a tunable constant (tau, lam, margin, eps, w, scale, shift) within its bounds;
- ``swap``: replace one unary op by another;
- ``wrap``: wrap a subtree in a unary op, a scale or a shift;
- ``regularise``: add a penalty term, e.g. DPOP's ``lam * relu(-chosen_logratios)``;
- ``gate`` (two parents): ``(1 - g) * A + g * B`` with ``g = sigmoid(beta * rho / tau)`` (LRML-style blend);
- ``blend`` (two parents): ``w * A + (1 - w) * B``;
- ``graft`` (two parents): a subtree of A replaced by a subtree of B.

Everything is drawn from ``random.Random`` seeded by (request seed, repair round), so the same request gives
the same code. The rendered code is our own, so it is compiled here in-process for a cheap self-check: the
checker's own runtime checks at each of ``_SELF_CHECK_BETAS`` (stricter in one way: a bump at rho = 0, which
the checker only warns about, is refused) and the profile's extreme margins (finite loss and gradient). A
proposal that fails it is redrawn from the same generator. The loop's checker still checks the result like any
proposal.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lossforge.discovery.proposers.base import HistoryEntry, Proposal, ProposalRequest, ProposerBase
from lossforge.discovery.proposers.expression_rendering import render
from lossforge.discovery.proposers.expressions import (
    BETA,
    BOUNDS,
    CHOSEN,
    LENGTH_GAP,
    REJECTED,
    RHO,
    RHO_LN,
    SEEDS,
    UNARY,
    Binary,
    Const,
    ExprError,
    Node,
    Unary,
    b,
    children,
    expression_from_code,
    is_tensor,
    k,
    structure_problems,
    to_text,
    u,
)
from lossforge.discovery.search.ranking import best_first
from lossforge.evaluate.checking.profile import compute_profile
from lossforge.evaluate.checking.runtime_checks import run_runtime_checks
from lossforge.evaluate.contract import compile_loss
from lossforge.evaluate.threads import torch_threads

if TYPE_CHECKING:
    from lossforge.discovery.config import RunConfig

MAX_ATTEMPTS = 60
_SEED_EXPLORATION = 0.2  # chance of taking a library seed as a parent even when the history has scored ones
_OPERATORS = (
    ("constant", 3),
    ("swap", 2),
    ("wrap", 2),
    ("regularise", 1),
    ("gate", 2),
    ("blend", 1),
    ("graft", 1),
    ("lengths", 1),
)
_WRAPS = ("tanh", "softplus", "log1p_abs", "square", "exp", "relu", "sigmoid")
_SELF_CHECK_BETAS = (0.05, 0.1, 0.5)

Path = tuple[int, ...]


@dataclass(frozen=True)
class Parent:
    tree: Node
    id: int | None  # archive id; None for a library seed that is not in the shown history
    label: str  # how the thought names it: "#12 evo_g1_i0 (score 0.71)" or "library seed 'ipo'"
    niche: str = ""  # its behavioural niche when ``search.niches`` is on


# -- tree surgery -----------------------------------------------------------------------------------------


def _subtrees(node: Node, path: Path = ()) -> list[tuple[Path, Node]]:
    found = [(path, node)]
    for i, child in enumerate(children(node)):
        found += _subtrees(child, (*path, i))
    return found


def _replace(node: Node, path: Path, new: Node) -> Node:
    if not path:
        return new
    if isinstance(node, Unary):
        return Unary(node.op, _replace(node.child, path[1:], new))
    if isinstance(node, Binary):
        if path[0] == 0:
            return Binary(node.op, _replace(node.left, path[1:], new), node.right)
        return Binary(node.op, node.left, _replace(node.right, path[1:], new))
    raise ExprError("path runs past a leaf")


def _tensor_subtrees(node: Node) -> list[tuple[Path, Node]]:
    return [(p, n) for p, n in _subtrees(node) if is_tensor(n)]


def _short(node: Node, limit: int = 72) -> str:
    """Expression text for a thought, cut short: the full expression is in the docstring."""
    text = to_text(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _draw_constant(rng: random.Random, label: str, around: float | None = None) -> Const:
    low, high = BOUNDS[label]
    if around is None or around == 0:
        value = rng.uniform(low, high) if label != "tau" else math.exp(rng.uniform(math.log(0.05), math.log(1.0)))
    else:
        value = around * math.exp(rng.uniform(-0.9, 0.9))
    value = min(max(value, low), high)
    return Const(float(f"{value:.3g}"), label)


# -- operators: each returns (tree, what-it-did) or None when it does not apply ---------------------------


def _op_constant(rng: random.Random, a: Parent) -> tuple[Node, str] | None:
    labelled = sorted({(n.label, n.value) for _, n in _subtrees(a.tree) if isinstance(n, Const) and n.label})
    if not labelled:
        return None
    label, old = rng.choice(labelled)
    new = _draw_constant(rng, label, around=old)
    if new.value == old:
        return None
    tree = a.tree
    for path, node in _subtrees(a.tree):  # every occurrence: eps in robust DPO appears twice as one constant
        if isinstance(node, Const) and (node.label, node.value) == (label, old):
            tree = _replace(tree, path, new)
    return tree, f"changed {label.upper()} from {old:g} to {new.value:g} in {a.label}"


def _op_swap(rng: random.Random, a: Parent) -> tuple[Node, str] | None:
    unaries = [(p, n) for p, n in _subtrees(a.tree) if isinstance(n, Unary) and n.op != "neg"]
    if not unaries:
        return None
    path, node = rng.choice(unaries)
    op = rng.choice([o for o in UNARY if o not in ("neg", node.op)])
    return _replace(a.tree, path, Unary(op, node.child)), f"replaced {node.op} by {op} in {a.label}"


def _op_wrap(rng: random.Random, a: Parent) -> tuple[Node, str] | None:
    path, node = rng.choice(_tensor_subtrees(a.tree))
    # Scaling or shifting the whole loss gives c*L or L+k, which train alike and fingerprint as duplicates.
    kind = rng.choice(("unary", "unary", "scale", "shift")) if path else "unary"
    if kind == "scale":
        const = _draw_constant(rng, "scale", around=1.0)
        new: Node = b("mul", const, node)
        what = f"scaled {_short(node)} by SCALE={const.value:g}"
    elif kind == "shift":
        const = _draw_constant(rng, "shift")
        new = b("add", node, const)
        what = f"shifted {_short(node)} by SHIFT={const.value:g}"
    else:
        op = rng.choice(_WRAPS)
        new = u(op, node)
        what = f"wrapped {_short(node)} in {op}"
    return _replace(a.tree, path, new), f"{what} in {a.label}"


def _regulariser(rng: random.Random) -> tuple[Node, str]:
    # Each penalty is zero or small at initialisation, so it does not swamp the preference term.
    options = (
        (u("relu", u("neg", CHOSEN)), "DPOP-style penalty on the chosen log-ratio falling below the reference"),
        (u("softplus", u("neg", b("mul", BETA, CHOSEN))), "smooth penalty keeping the chosen likelihood up"),
        (u("relu", REJECTED), "penalty on the rejected log-ratio rising above the reference"),
        (u("square", b("mul", BETA, RHO)), "IPO-like penalty that keeps the margin bounded"),
    )
    return rng.choice(options)


def _op_regularise(rng: random.Random, a: Parent) -> tuple[Node, str] | None:
    penalty, why = _regulariser(rng)
    lam = Const(float(f"{math.exp(rng.uniform(math.log(0.01), math.log(0.5))):.3g}"), "lam")
    what = f"added LAM={lam.value:g} x {_short(penalty)} ({why}) to {a.label}"
    return b("add", a.tree, b("mul", lam, penalty)), what


def _op_lengths(rng: random.Random, a: Parent) -> tuple[Node, str] | None:
    """Make one margin length-aware: per-token log-ratios (LN-DPO) or a length-gap offset (R-DPO)."""
    margins = [path for path, node in _subtrees(a.tree) if node == RHO]
    if not margins:
        return None
    path = rng.choice(margins)
    if rng.random() < 0.5:
        scale = Const(20.0, "scale")  # rho_ln is rho divided by about the tokens per completion
        what = f"length-normalized the margin (rho -> SCALE * rho_ln, SCALE={scale.value:g}, as LN-DPO) in {a.label}"
        return _replace(a.tree, path, b("mul", scale, RHO_LN)), what
    lam = Const(float(f"{math.exp(rng.uniform(math.log(0.005), math.log(0.1))):.3g}"), "lam")
    what = (
        f"offset the margin by the length gap (rho -> rho - LAM * length_gap, LAM={lam.value:g}, as R-DPO) in {a.label}"
    )
    return _replace(a.tree, path, b("sub", RHO, b("mul", lam, LENGTH_GAP))), what


def _op_gate(rng: random.Random, a: Parent, c: Parent) -> tuple[Node, str] | None:
    tau = _draw_constant(rng, "tau")
    gate = u("sigmoid", b("div", b("mul", BETA, RHO), tau))
    tree = b("add", b("mul", a.tree, b("sub", k(1.0), gate)), b("mul", c.tree, gate))
    what = (
        f"sigmoid gate sigmoid(beta*rho/TAU), TAU={tau.value:g}, moving from {a.label} at negative margins "
        f"to {c.label} at positive margins"
    )
    return tree, what


def _op_blend(rng: random.Random, a: Parent, c: Parent) -> tuple[Node, str] | None:
    w = _draw_constant(rng, "w")
    tree = b("add", b("mul", w, a.tree), b("mul", b("sub", k(1.0), w), c.tree))
    return tree, f"weighted sum W*A + (1-W)*B with W={w.value:g}, A = {a.label}, B = {c.label}"


def _op_graft(rng: random.Random, a: Parent, c: Parent) -> tuple[Node, str] | None:
    path, old = rng.choice(_tensor_subtrees(a.tree))
    _, new = rng.choice(_tensor_subtrees(c.tree))
    if old == new:
        return None
    tree = _replace(a.tree, path, new)
    return tree, f"grafted {_short(new)} from {c.label} in place of {_short(old)} in {a.label}"


# -- self-check -------------------------------------------------------------------------------------------


def self_check(code: str) -> str | None:
    """Execute our own rendered code on synthetic log-probs; None if it behaves, else the reason."""
    with torch_threads(1):
        return _self_check(code)


def _self_check(code: str) -> str | None:
    fn = compile_loss(code)  # our own rendering, not model output: compiled in-process
    for beta in _SELF_CHECK_BETAS:
        # No per-call alarm: proposals are requested from the loop's worker threads, where SIGALRM cannot be set.
        findings = run_runtime_checks(fn, beta=beta, per_call_seconds=None)
        if findings.errors:
            return findings.errors[0]
        if findings.bump_at_zero:
            return f"no learning signal at rho = 0 (beta {beta:g}): the gradient there lowers the margin"
    profile = compute_profile(fn)
    if not profile.stable_extremes:
        margins = ", ".join(f"{z:g}" for z in profile.unstable_beta_rho)
        return f"non-finite loss or gradient in float32 at extreme margins (beta*rho = {margins})"
    return None


# -- the proposer -----------------------------------------------------------------------------------------


def _parent_pool(history: tuple[HistoryEntry, ...]) -> list[Parent]:
    """Scored history entries whose tree is known, best first (ties: lower id first)."""
    pool, seen = [], set()
    for entry in best_first(history):
        tree = expression_from_code(entry.code) or SEEDS.get(entry.name)
        if tree is None or entry.id in seen or structure_problems(tree):
            continue  # e.g. an LLM candidate or a batch-coupled library loss (kto_pair): not expressible
        seen.add(entry.id)
        pool.append(Parent(tree, entry.id, f"#{entry.id} {entry.name} (score {entry.score:.4g})", entry.niche))
    return pool


class EvolveProposer(ProposerBase):
    """Proposer protocol implementation: one mutated or crossed-over library-style loss per request."""

    name = "evolve"

    def __init__(self, max_attempts: int = MAX_ATTEMPTS, niches_explore: float | None = None) -> None:
        self.max_attempts = max_attempts
        # With niches on (``search.niches``): the chance that a parent is the elite of a niche drawn uniformly
        # among the niches of the history, instead of a rank-weighted draw that favours the global best.
        self.niches_explore = niches_explore

    @classmethod
    def from_config(cls, config: RunConfig) -> EvolveProposer:
        # Seeds come per request (run seed, generation, index); only the niches' explore share is configured.
        search = config.search
        return cls(niches_explore=search.niches_explore if search.niches else None)

    def propose(self, request: ProposalRequest) -> Proposal:
        rng = random.Random(f"evolve:{request.seed}:{request.repair_round}")
        pool = _parent_pool(request.history)
        known = {to_text(p.tree) for p in pool} | {to_text(t) for t in SEEDS.values()}
        name = f"evo_g{request.generation}_i{request.index}" + (
            f"_r{request.repair_round}" if request.repair_round else ""
        )
        last_reason = ""
        for attempt in range(1, self.max_attempts + 1):
            operator = rng.choices([o for o, _ in _OPERATORS], weights=[w for _, w in _OPERATORS])[0]
            first = self._pick(rng, pool, explore=self.niches_explore)
            parents: tuple[Parent, ...]
            if operator in ("gate", "blend", "graft"):
                second = self._pick(rng, pool, other_than=first, explore=self.niches_explore)
                made = {"gate": _op_gate, "blend": _op_blend, "graft": _op_graft}[operator](rng, first, second)
                parents = (first, second)
            else:
                single = {
                    "constant": _op_constant,
                    "swap": _op_swap,
                    "wrap": _op_wrap,
                    "regularise": _op_regularise,
                    "lengths": _op_lengths,
                }
                made = single[operator](rng, first)
                parents = (first,)
            if made is None:
                continue
            tree, what = made
            text = to_text(tree)
            if text in known:
                last_reason = "same expression as a parent or a seed"
                continue
            if problems := structure_problems(tree):
                last_reason = "; ".join(problems)
                continue
            ids = tuple(dict.fromkeys(p.id for p in parents if p.id is not None))
            thought = f"Evolved by {operator}: {what}."
            code = render(tree, name=name, thought=thought, parents=ids)
            if reason := self_check(code):
                last_reason = reason
                continue
            return Proposal(
                code=code,
                name=name,
                thought=thought,
                parents=ids,
                proposer=self.name,
                extra={"operation": operator, "expression": text, "attempts": attempt, "origin": "evolve"},
            )
        # Every draw failed the guard rails (very unlikely): hand the loop the best parent unchanged with the
        # reason, so the archive records a duplicate instead of the loop losing a slot silently.
        first = pool[0] if pool else Parent(SEEDS["dpo"], None, "library seed 'dpo'")
        ids = () if first.id is None else (first.id,)
        thought = (
            f"No mutation passed the self-check in {self.max_attempts} draws (last: {last_reason}); "
            f"{first.label} unchanged."
        )
        code = render(first.tree, name=name, thought=thought, parents=ids)
        extra = {
            "operation": "none",
            "expression": to_text(first.tree),
            "attempts": self.max_attempts,
            "origin": "evolve",
        }
        return Proposal(code=code, name=name, thought=thought, parents=ids, proposer=self.name, extra=extra)

    @staticmethod
    def _pick(
        rng: random.Random, pool: list[Parent], other_than: Parent | None = None, explore: float | None = None
    ) -> Parent:
        """Rank-weighted choice among scored history (weight 1/rank), else a library seed; with niches, a
        share ``explore`` of the draws takes the best parent of a uniformly drawn niche instead."""
        candidates = [p for p in pool if other_than is None or p.id != other_than.id]
        if candidates and rng.random() >= _SEED_EXPLORATION:
            niches = sorted({p.niche for p in candidates if p.niche})
            if explore is not None and niches and rng.random() < explore:
                niche = rng.choice(niches)
                return next(p for p in candidates if p.niche == niche)  # the pool is best first
            return rng.choices(candidates, weights=[1.0 / (rank + 1) for rank in range(len(candidates))])[0]
        names = [n for n in sorted(SEEDS) if other_than is None or SEEDS[n] != other_than.tree]
        seed_name = rng.choice(names)
        in_history = next((p for p in pool if p.tree == SEEDS[seed_name]), None)
        return in_history or Parent(SEEDS[seed_name], None, f"library seed '{seed_name}'")


__all__ = ["MAX_ATTEMPTS", "EvolveProposer", "Parent", "self_check"]
