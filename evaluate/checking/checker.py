"""``check(source) -> CheckReport``: parse, static policy and sandboxed run behind one call.

Each layer is usable on its own (``parse.parse_reply``, ``policy.check_policy``, ``sandbox.run_sandbox``);
this module only chains them and turns every outcome into a report. It never raises for a bad candidate.
The sandbox forks from a server that imported torch once, so checking many candidates in a row (or through
``check_many``) costs a fork each, not an interpreter start-up.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from lossforge.candidates import parse_source
from lossforge.evaluate.checking.check_report import CheckReport
from lossforge.evaluate.checking.parse import ParsedProposal, ParseError, parse_candidate_file, parse_reply
from lossforge.evaluate.checking.policy import check_policy
from lossforge.evaluate.checking.sandbox import DEFAULT_TIMEOUT, run_sandbox
from lossforge.evaluate.isolation import Limits, warm_up

Format = Literal["auto", "python", "reply"]
FORMATS: tuple[str, ...] = ("auto", "python", "reply")


def detect_format(source: str) -> Literal["python", "reply"]:
    """``python`` for source that parses and defines a function, else ``reply`` when it looks like JSON."""
    try:
        tree = parse_source(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is not None and any(isinstance(node, ast.FunctionDef) for node in tree.body):
        return "python"
    return "reply" if "{" in source and '"code"' in source else "python"


def _parse(source: str, fmt: Format) -> ParsedProposal:
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    kind = detect_format(source) if fmt == "auto" else fmt
    return parse_reply(source) if kind == "reply" else parse_candidate_file(source)


def check(
    source: str | ParsedProposal,
    *,
    fmt: Format = "auto",
    static_policy: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    limits: Limits | None = None,
    path: str | None = None,
) -> CheckReport:
    """Check one candidate: an LLM reply (``fmt="reply"``), a contract-format file (``"python"``) or either;
    or a proposal already parsed (the loop's: the proposer parsed the reply once), which skips the parse.

    ``static_policy=False`` skips the AST screen (the sandbox's runtime protections still hold); ``timeout``
    bounds the sandboxed run in wall-clock seconds, ``limits`` its resources. The report's ``stage`` is the
    first layer that rejected the candidate, or ``ok``.
    """
    start = time.perf_counter()
    report = CheckReport(passed=False, stage="parse", path=path)
    try:
        proposal = source if isinstance(source, ParsedProposal) else _parse(source, fmt)
    except ParseError as exc:
        report.errors.append(str(exc))
        report.seconds = time.perf_counter() - start
        return report
    report.name, report.thought, report.code = proposal.name or None, proposal.thought or None, proposal.code
    if static_policy:
        policy = check_policy(proposal.code)
        report.warnings += policy.warnings
        if policy.errors:
            report.stage, report.errors = "static", policy.errors
            report.seconds = time.perf_counter() - start
            return report
    paused = time.perf_counter()
    warm_up()  # starting the fork server (once per process) is not part of this candidate's check time
    start += time.perf_counter() - paused
    outcome = run_sandbox(proposal.code, timeout=timeout, limits=limits)
    report.isolation = outcome.isolation
    report.warnings += outcome.warnings
    report.errors += outcome.errors
    report.seconds = time.perf_counter() - start
    if outcome.errors:
        report.stage = "sandbox"
        return report
    report.passed, report.stage = True, "ok"
    report.profile, report.fingerprint = outcome.profile, outcome.fingerprint
    return report


def check_many(
    sources: Iterable[str],
    *,
    workers: int = 1,
    fmt: Format = "auto",
    static_policy: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    limits: Limits | None = None,
    paths: Sequence[str | None] | None = None,
) -> list[CheckReport]:
    """Check several candidates through the same fork server, ``workers`` sandboxes at a time, in order."""
    items = list(sources)
    if paths is not None and len(paths) != len(items):
        raise ValueError(f"paths has {len(paths)} entries for {len(items)} sources; give one per source or none.")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    named = list(zip(items, paths if paths is not None else [None] * len(items), strict=True))
    warm_up()  # start the server once, before any candidate's timeout starts

    def one(item: tuple[str, str | None]) -> CheckReport:
        return check(item[0], fmt=fmt, static_policy=static_policy, timeout=timeout, limits=limits, path=item[1])

    if workers == 1 or len(named) < 2:
        return [one(item) for item in named]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # each thread waits on its own child process
        return list(pool.map(one, named))


__all__ = ["FORMATS", "Format", "check", "check_many", "detect_format"]
