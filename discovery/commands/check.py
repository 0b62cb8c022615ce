"""`lossforge check PATH... [--json]`: check candidate files (`.py`) and LLM replies (`.json`).

Exit codes: 0 every candidate passed, 1 at least one was rejected (a malformed `.json` reply is a parse
rejection), 2 a usage error (missing file, unreadable or non-UTF-8 input, another extension), reported as
one line on stderr before anything is checked. With ``--json`` stdout holds one JSON object per PATH.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from lossforge.discovery.commands.common import EXIT_OK, EXIT_UNSUCCESSFUL, UsageError, emit_json, fail
from lossforge.evaluate.checking.check_report import CheckReport

SUFFIX_FORMATS = {".py": "python", ".json": "reply"}
JSON_KEYS = ("path", "passed", "stage", "errors", "warnings", "profile", "fingerprint", "name", "isolation")
# The protections the security model counts on; one that is off on this machine is named in the text output.
_REPORTED = ("network_namespace", "seccomp", "audit_hook")


def read_inputs(paths: list[Path]) -> list[tuple[Path, str, str]]:
    """(path, text, format) for each PATH; raises ``UsageError`` on the first unusable one."""
    inputs = []
    for path in paths:
        fmt = SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UsageError(
                f"{path}: expected a .py candidate or a .json LLM reply, got {path.suffix or 'no extension'!r}."
            )
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file.") from None
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
        inputs.append((path, text, fmt))
    return inputs


def _summary(report: CheckReport) -> str:
    label = f"{report.path}" + (f" ({report.name})" if report.name else "")
    if report.passed:
        lines = [f"PASS  {label}  fingerprint {report.fingerprint or '-'}  {report.seconds:.2f} s"]
    else:
        lines = [f"FAIL  {label}  rejected at stage '{report.stage}'"]
        lines += [f"      error: {error}" for error in report.errors]
    lines += [f"      warning: {warning}" for warning in report.warnings]
    lines += [
        f"      isolation: {name} {report.isolation[name]}"
        for name in _REPORTED
        if report.isolation.get(name, "on") != "on"
    ]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check_command(
        paths: Annotated[list[Path], typer.Argument(help="Candidate files (.py) and LLM replies (.json) to check.")],
        json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object per PATH on stdout.")] = False,
        timeout: Annotated[
            float, typer.Option("--timeout", min=0.5, help="Wall-clock limit of each sandboxed run, seconds.")
        ] = 10.0,
        no_static_policy: Annotated[
            bool,
            typer.Option(
                "--no-static-policy", help="Skip the AST screen (the sandbox's runtime protections still hold)."
            ),
        ] = False,
    ) -> None:
        """Check candidates: parse, static policy, sandboxed run on synthetic log-probs."""
        try:
            inputs = read_inputs(paths)
        except UsageError as exc:
            raise fail(str(exc)) from None
        from lossforge.evaluate import isolation

        # The fork server imports torch while this process does the same, instead of one after the other.
        isolation.preload(["lossforge.evaluate.checking.sandbox"])
        isolation.start_server()
        from lossforge.evaluate.checking.checker import check  # heavy (torch); imported only when there is work

        all_passed = True
        for path, text, fmt in inputs:
            report = check(text, fmt=fmt, timeout=timeout, static_policy=not no_static_policy, path=str(path))  # type: ignore[arg-type]
            all_passed &= report.passed
            if json_output:
                data = report.to_dict()
                emit_json({key: data[key] for key in JSON_KEYS})
            else:
                typer.echo(_summary(report))
        raise typer.Exit(EXIT_OK if all_passed else EXIT_UNSUCCESSFUL)
