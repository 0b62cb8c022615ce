"""Evolutionary proposer: deterministic, contract-format code that behaves; expression trees match the library."""

from __future__ import annotations

import ast

import pytest
import torch
from lossforge.candidates import load_builtin, read_metadata
from lossforge.discovery.proposers.base import HistoryEntry, Proposal, ProposalRequest
from lossforge.discovery.proposers.evolve import EvolveProposer, self_check
from lossforge.discovery.proposers.expression_rendering import render
from lossforge.discovery.proposers.expressions import (
    SEEDS,
    ExprError,
    expression_from_code,
    from_text,
    structure_problems,
    to_text,
)
from lossforge.evaluate.contract import LENGTH_NAMES, takes_lengths

CONTRACT_ARGS = [
    "policy_chosen_logps",
    "policy_rejected_logps",
    "reference_chosen_logps",
    "reference_rejected_logps",
    "beta",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def request(seed: int, history: tuple[HistoryEntry, ...] = (), generation: int = 1, repair_round: int = 0):
    return ProposalRequest(
        generation=generation, index=seed % 7, seed=seed, history=history, task="sentiment", repair_round=repair_round
    )


def library_history() -> tuple[HistoryEntry, ...]:
    """Every seed as a scored archive row (ids 1..10), so every parent the proposer picks has an id."""
    return tuple(
        HistoryEntry(id=i, name=name, status="ok", code=load_builtin(name).source, score=1.0 - 0.05 * i)
        for i, name in enumerate(sorted(SEEDS), start=1)
    )


def run_loss(code: str):
    namespace: dict[str, object] = {}
    exec(compile(code, "<test>", "exec"), namespace)  # noqa: S102 - our own generated code, not model output
    return namespace["loss"]


def assert_contract(proposal: Proposal) -> None:
    tree = ast.parse(proposal.code)
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert all(isinstance(n, ast.Import) for n in imports)
    assert {(a.name, a.asname) for n in imports for a in n.names} <= {
        ("torch", None),
        ("torch.nn.functional", "F"),
        ("math", None),
    }
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    public = [f for f in functions if not f.name.startswith("_")]
    assert [f.name for f in public] == ["loss"]
    assert [a.arg for a in public[0].args.args] in (CONTRACT_ARGS, [*CONTRACT_ARGS, *LENGTH_NAMES])
    for node in tree.body:  # module level: docstring, imports, constants, private helpers only
        assert isinstance(node, ast.Expr | ast.Import | ast.Assign | ast.FunctionDef), ast.dump(node)
        if isinstance(node, ast.Assign):
            value = node.value.operand if isinstance(node.value, ast.UnaryOp) else node.value  # -0.5 is USub(0.5)
            assert isinstance(value, ast.Constant | ast.List)
    meta = read_metadata(proposal.code)
    assert meta["NAME"] == proposal.name and meta["ORIGIN"] == "evolve"
    assert meta["PARENTS"] == [str(p) for p in proposal.parents]
    assert meta["DESCRIPTION"] == proposal.thought


def assert_behaves(code: str) -> None:
    loss = run_loss(code)
    generator = torch.Generator().manual_seed(123)
    for batch in (2, 8, 64):
        ref_chosen, ref_rejected = (-150.0 + 30.0 * torch.randn(batch, generator=generator) for _ in range(2))
        chosen_lengths, rejected_lengths = (torch.randint(0, 200, (batch,), generator=generator).float() for _ in "cr")

        def fn(pc, pr, rc, rr, beta, lengths=(chosen_lengths, rejected_lengths)):  # type: ignore[no-untyped-def]
            if not takes_lengths(loss):
                return loss(pc, pr, rc, rr, beta)
            return loss(
                pc, pr, rc, rr, beta, chosen_lengths=lengths[0].to(pc.dtype), rejected_lengths=lengths[1].to(pc.dtype)
            )

        for beta in (0.1, 0.5):
            for spread in (0.0, 2.0):
                pc = (ref_chosen + spread * torch.randn(batch, generator=generator)).requires_grad_(True)
                pr = (ref_rejected + spread * torch.randn(batch, generator=generator)).requires_grad_(True)
                losses = fn(pc, pr, ref_chosen, ref_rejected, beta)
                assert losses.shape == (batch,) and torch.isfinite(losses).all()
                grad_chosen, grad_rejected = torch.autograd.grad(losses.sum(), (pc, pr))
                assert torch.isfinite(grad_chosen).all() and torch.isfinite(grad_rejected).all()
                if spread == 0.0 and not takes_lengths(loss):  # at policy == reference descent raises every margin
                    assert ((grad_chosen - grad_rejected) < 0).all()
                elif spread == 0.0:  # per-token margins of a 0- or 1-token completion can saturate a pair
                    push = grad_chosen - grad_rejected
                    assert (push <= 0).all() and push.sum() < 0
        # bfloat16: shape, finiteness and gradients, as the checker asks
        pc, pr = (ref_chosen.bfloat16().requires_grad_(True), ref_rejected.bfloat16().requires_grad_(True))
        losses = fn(pc, pr, ref_chosen.bfloat16(), ref_rejected.bfloat16(), 0.1)
        assert losses.shape == (batch,) and torch.isfinite(losses.float()).all()
        assert all(torch.isfinite(g.float()).all() for g in torch.autograd.grad(losses.sum(), (pc, pr)))


def test_same_seed_same_code_different_seeds_differ() -> None:
    history = library_history()
    first = EvolveProposer().propose(request(11, history))
    again = EvolveProposer().propose(request(11, history))
    assert first == again
    codes = {EvolveProposer().propose(request(seed, history)).code for seed in range(10)}
    assert len(codes) == 10
    assert EvolveProposer().propose(request(11, history, repair_round=1)).code != first.code


@pytest.mark.parametrize("with_history", [False, True])
def test_every_proposal_follows_the_contract_and_behaves(with_history: bool) -> None:
    history = library_history() if with_history else ()
    operations = set()
    for seed in range(20):
        proposal = EvolveProposer().propose(request(seed, history, generation=seed % 3 + 1))
        assert proposal.proposer == "evolve" and proposal.parse_error is None
        assert proposal.name == f"evo_g{seed % 3 + 1}_i{seed % 7}"
        assert_contract(proposal)
        assert_behaves(proposal.code)
        assert expression_from_code(proposal.code) == from_text(proposal.extra["expression"])
        operations.add(proposal.extra["operation"])
    assert {"constant", "swap", "wrap", "gate"} <= operations


def test_parents_come_from_history_and_crossover_has_two() -> None:
    history = library_history()
    ids = {e.id for e in history}
    crossovers = 0
    for seed in range(30):
        proposal = EvolveProposer().propose(request(seed, history))
        assert proposal.parents and set(proposal.parents) <= ids
        if proposal.extra["operation"] in ("gate", "blend", "graft"):
            crossovers += 1
            assert len(proposal.parents) == 2 and proposal.parents[0] != proposal.parents[1]
        else:
            assert len(proposal.parents) == 1
    assert crossovers >= 3


def test_generated_candidates_are_parents_of_the_next_generation() -> None:
    child = EvolveProposer().propose(request(3))
    history = (
        HistoryEntry(id=42, name=child.name, status="ok", code=child.code, score=0.9),
        HistoryEntry(
            id=43, name="llm_thing", status="ok", code="def loss(a, b, c, d, beta):\n    return a", score=5.0
        ),  # no expression: cannot be a parent
        HistoryEntry(id=44, name="dpo", status="rejected", code="", score=None),
    )
    parents = set()
    for seed in range(12):
        parents.update(EvolveProposer().propose(request(seed, history, generation=2)).parents)
    assert parents == {42}


def test_seed_trees_equal_the_library_losses() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = [-100.0 + 10.0 * torch.randn(16, generator=generator, dtype=torch.float64) for _ in range(4)]
    lengths = {name: torch.randint(0, 120, (16,), generator=generator).double() for name in LENGTH_NAMES}
    for name, tree in SEEDS.items():
        assert from_text(to_text(tree)) == tree
        fn = run_loss(render(tree, name=name, thought="seed", parents=()))
        library = load_builtin(name).fn
        extra = lengths if takes_lengths(library) else {}
        assert takes_lengths(fn) == takes_lengths(library), name
        for beta in (0.05, 0.1, 1.0):
            expected = library(*inputs, beta, **extra)
            assert torch.allclose(fn(*inputs, beta, **extra), expected, rtol=1e-9, atol=1e-9), name


def test_expression_text_errors_and_structure_rules() -> None:
    for bad in ("(neg rho", "(neg rho rho)", "(frobnicate rho)", "rho )", "colour=1.0", "(mul beta rho) rho"):
        with pytest.raises(ExprError):
            from_text(bad)
    assert structure_problems(from_text("(neg (logsigmoid beta))"))  # no dependence on log-probs
    assert structure_problems(from_text("(div rho (sub beta 0.1))"))  # denominator hits zero at beta 0.1
    assert not structure_problems(from_text("(div rho (mul 2.0 beta))"))
    assert expression_from_code("def loss(a, b, c, d, beta):\n    return a\n") is None


def test_self_check_catches_wrong_sign_and_overflow() -> None:
    good = render(SEEDS["dpo"], name="x", thought="t", parents=())
    assert self_check(good) is None
    wrong_sign = render(from_text("(logsigmoid (mul beta rho))"), name="x", thought="t", parents=())
    assert "no learning signal" in (self_check(wrong_sign) or "")
    overflow = good.replace("return -F.logsigmoid(beta * rho)", "return torch.exp(-beta * rho * 10.0)")
    assert "non-finite" in (self_check(overflow) or "")
    flat = render(from_text("(log1p_abs (mul beta rho))"), name="x", thought="t", parents=())
    assert self_check(flat) is not None  # |x| has zero gradient at 0: no signal


def test_large_margins_stay_finite_through_the_clamped_exp() -> None:
    fn = run_loss(render(SEEDS["lrml"], name="lrml", thought="t", parents=()))
    margin = torch.tensor([-5000.0, 0.0, 5000.0], requires_grad=True)
    zeros = torch.zeros(3)
    losses = fn(margin, zeros, zeros, zeros, 1.0)
    assert torch.isfinite(losses).all()
    (grad,) = torch.autograd.grad(losses.sum(), margin)
    assert torch.isfinite(grad).all()


def test_division_by_a_tensor_goes_through_the_safe_helper() -> None:
    tree = from_text("(neg (div rho (add (square rho) 1.0)))")
    code = render(tree, name="x", thought="t", parents=())
    assert "_safe_div(" in code and "DIV_EPS = " in code
    assert self_check(code) is None
    fn = run_loss(render(from_text("(div rho rejected)"), name="y", thought="t", parents=()))
    zeros = torch.zeros(2)
    chosen = torch.tensor([1.0, -1.0], requires_grad=True)
    losses = fn(chosen, zeros, zeros, zeros, 0.1)  # rejected log-ratio 0: the denominator is clamped, not 0
    assert torch.isfinite(losses).all() and torch.isfinite(torch.autograd.grad(losses.sum(), chosen)[0]).all()


def test_evolve_makes_length_aware_proposals_that_pass_the_checker() -> None:
    from lossforge.evaluate import check

    history = library_history()
    proposals = [EvolveProposer().propose(request(seed, history, generation=1)) for seed in range(60)]
    aware = [p for p in proposals if "chosen_lengths" in p.code]
    assert aware and {p.extra["operation"] for p in aware} >= {"lengths"}
    for proposal in aware[:3]:
        report = check(proposal.code, fmt="python")
        assert report.passed, report.errors
        assert report.profile is not None and report.profile["length_aware"] is True
