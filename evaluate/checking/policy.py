"""Static policy: screen a candidate's source on its AST, against an allowlist, before anything runs.

It enforces the contract (docs/DESIGN.md, "The loss contract"): a docstring, the three imports under their canonical
names, numeric and string constants (``PARENTS`` may be a list), private ``_helper`` functions and one public
``loss``. Everything reached by name must be on ``allowlist.py`` (pure, stateless, deterministic math): a denylist
was escaped twice, by ``torch.zeros(1).storage_type()(1).type("builtins.zz")`` (a storage's ``.type`` imports any
dotted name) and ``import torch as __builtins__``. So a module name is never rebound (assignment, parameter,
``for``, ``with``/``except ... as``, walrus, comprehension, ``def``, ``del``) and only used as ``module.name``;
attributes are checked by name, on a module against its list, on anything else against the tensor methods (names
harmless on any value); nothing changes a value in place (``x[i] = v``, ``x += y``, ``.attr = v``, ``out=``,
``inplace=``) or keeps state between calls (defaults are immutable, the metadata list is not read by code); no
dunders anywhere, classes, decorators, generators, ``async``, ``global``, ``match`` or nested imports; a size limit.

All errors are collected (at most ``MAX_ERRORS``), each "line N: <sentence an LLM can act on>". The policy is
one layer: the sandbox's runtime protections hold without it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from lossforge.candidates import parse_source
from lossforge.evaluate.checking import allowlist as allowed
from lossforge.evaluate.contract import CONTRACT_PARAMETERS, signature_problem

MAX_SOURCE_CHARS = 20_000
MAX_ERRORS = 20
METADATA_LISTS = frozenset({"PARENTS"})  # the one module-level list the contract has (candidate ids)
_BANNED_NODES: dict[type[ast.AST], str] = {
    ast.ClassDef: "classes are not allowed; write the loss as functions",
    ast.AsyncFunctionDef: "async functions are not allowed",
    ast.Await: "await is not allowed",
    ast.AsyncFor: "async for is not allowed",
    ast.AsyncWith: "async with is not allowed",
    ast.Yield: "generators (yield) are not allowed; return a tensor",
    ast.YieldFrom: "generators (yield from) are not allowed; return a tensor",
    ast.Global: "`global` is not allowed; a loss must not change module state",
    ast.Nonlocal: "`nonlocal` is not allowed; return values instead of rebinding outer variables",
    ast.Match: "`match` statements are not allowed (class patterns read attributes by name); use if/else",
    ast.AugAssign: "augmented assignment (`x += y`) changes a tensor in place; write `x = x + y`",
}


@dataclass
class PolicyResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors


class _Screen:
    """One pass over a module; collects errors in order, without duplicates."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.result = PolicyResult()
        self.imported: set[str] = set()  # module names bound by canonical imports
        self.used: dict[str, ast.AST] = {}  # module names used, at their first use
        self.constants: dict[str, bool] = {}  # module-level constant -> whether it is immutable
        self.parents: dict[ast.AST, ast.AST] = {}
        self.docstrings: set[ast.AST] = set()
        self.annotations: set[ast.AST] = set()  # nodes inside type annotations
        self.in_functions: set[ast.AST] = set()  # nodes inside a function or lambda
        self.chained: set[ast.AST] = set()  # inner links of attribute chains already checked

    def error(self, node: ast.AST | None, message: str) -> None:
        line = getattr(node, "lineno", None)
        text = f"line {line}: {message}" if line else message
        if text not in self.result.errors and len(self.result.errors) < MAX_ERRORS:
            self.result.errors.append(text)

    def dunder(self, node: ast.AST, name: str) -> None:
        self.error(node, f"`{name}` is not allowed: dunder names reach interpreter internals.")

    def run(self) -> PolicyResult:
        self.index()
        loss_defs = 0
        for index, statement in enumerate(self.tree.body):
            if index == 0 and isinstance(statement, ast.Expr) and statement.value in self.docstrings:
                continue
            if isinstance(statement, ast.Import | ast.ImportFrom):
                self.import_statement(statement)
            elif isinstance(statement, ast.Assign | ast.AnnAssign):
                self.constant_statement(statement)
            elif isinstance(statement, ast.FunctionDef):
                loss_defs += statement.name == "loss"
                self.function_statement(statement)
            else:
                snippet = ast.unparse(statement).splitlines()[0][:60]
                self.error(
                    statement,
                    f"`{snippet}` is not allowed at module level; module level may hold only imports, constants and "
                    "function definitions (put logic inside `loss`).",
                )
        if loss_defs == 0:
            self.error(None, f"no function `loss` is defined; define `def loss({', '.join(CONTRACT_PARAMETERS)}):`.")
        elif loss_defs > 1:
            self.error(None, f"`loss` is defined {loss_defs} times; define it exactly once.")
        self.walk()
        for name, node in self.used.items():
            if name not in self.imported:
                wanted = allowed.IMPORT_STATEMENTS[name]
                self.error(node, f"`{name}` is used but not imported; add `{wanted}` at the top of the module.")
        return self.result

    def index(self) -> None:
        """Parents, docstrings and annotation subtrees, which later rules look up."""
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Module | ast.FunctionDef) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    self.docstrings.add(first.value)
            if isinstance(node, ast.FunctionDef | ast.Lambda):
                self.in_functions.update(ast.walk(node))
            annotations = [getattr(node, "returns", None), getattr(node, "annotation", None)]
            for annotation in filter(None, annotations):
                self.annotations.update(ast.walk(annotation))

    def import_statement(self, statement: ast.Import | ast.ImportFrom) -> None:
        if isinstance(statement, ast.ImportFrom):
            if statement.module == "__future__" and statement.level == 0:
                return
            module = "." * statement.level + (statement.module or "")
            self.error(
                statement,
                f"importing `{module}` with `from ... import` is not allowed; candidates may import only "
                f"{allowed.IMPORTS_TEXT} and write `torch.<name>`, `F.<name>`, `math.<name>`.",
            )
            return
        for alias in statement.names:
            if (alias.name, alias.asname) in allowed.CANONICAL_IMPORTS:
                self.imported.add(alias.asname or alias.name)
                continue
            if alias.asname and alias.asname.startswith("__"):
                self.dunder(statement, alias.asname)
            bound = {module: name for name, module in allowed.MODULE_NAMES.items()}.get(alias.name)
            if bound:
                self.error(
                    statement,
                    f"`import {alias.name}{' as ' + alias.asname if alias.asname else ''}` is not allowed: import it "
                    f"under its canonical name, `{allowed.IMPORT_STATEMENTS[bound]}`, and refer to it as `{bound}`.",
                )
            else:
                self.error(
                    statement,
                    f"importing `{alias.name}` is not allowed; candidates may import only {allowed.IMPORTS_TEXT}.",
                )

    def constant_statement(self, statement: ast.Assign | ast.AnnAssign) -> None:
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        value = statement.value
        immutable = value is not None and self.is_constant(value, immutable=True)
        mutable = value is not None and not immutable and self.is_constant(value, immutable=False)
        for target in targets:
            if not isinstance(target, ast.Name):
                self.error(statement, "module-level assignments must bind a single name (`TAU = 0.05`).")
                continue
            if target.id == "loss":
                self.error(statement, "do not rebind `loss` at module level.")
            if mutable and target.id not in METADATA_LISTS:
                self.error(
                    statement,
                    f"module-level lists are mutable state; make `{target.id}` a tuple (`{target.id} = (...)`); only "
                    "the metadata list `PARENTS` may be a list.",
                )
            self.constants[target.id] = not mutable
        if not (immutable or mutable):
            self.error(
                statement,
                "module-level values must be numeric constants or strings (tuples of them; `PARENTS` a list of "
                "strings); compute anything else inside `loss`.",
            )

    def is_constant(self, node: ast.expr, *, immutable: bool) -> bool:
        """A literal value: numbers, strings, None, tuples of them (lists too unless ``immutable``)."""
        if isinstance(node, ast.Constant):
            return node.value is None or isinstance(node.value, int | float | str)
        if isinstance(node, ast.Tuple) or (isinstance(node, ast.List) and not immutable):
            return all(self.is_constant(element, immutable=immutable) for element in node.elts)
        if isinstance(node, ast.UnaryOp):
            return isinstance(node.op, ast.USub | ast.UAdd) and self.is_constant(node.operand, immutable=immutable)
        if isinstance(node, ast.BinOp):
            return not isinstance(node.op, ast.MatMult) and all(
                self.is_constant(side, immutable=immutable) for side in (node.left, node.right)
            )
        if isinstance(node, ast.Name):
            return self.constants.get(node.id, False) or (not immutable and node.id in self.constants)
        if isinstance(node, ast.Attribute):  # math.pi and friends
            return isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in allowed.MATH_CONSTANTS
        if isinstance(node, ast.Call):  # math.log(2), float("inf")
            math_call = ast.unparse(node.func).startswith("math.")
            builtin_call = isinstance(node.func, ast.Name) and node.func.id in {"float", "int", "abs", "min", "max"}
            arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
            return (math_call or builtin_call) and all(self.is_constant(a, immutable=True) for a in arguments)
        return False

    def function_statement(self, function: ast.FunctionDef) -> None:
        if function.name != "loss" and (not function.name.startswith("_") or function.name.startswith("__")):
            self.error(
                function,
                f"`{function.name}` is a second public function; the only public function is `loss`, helpers must "
                f"be private (rename it `_{function.name.lstrip('_')}`).",
            )
        if function.name != "loss":
            return
        arguments = function.args
        positional = [a.arg for a in arguments.posonlyargs + arguments.args]
        keyword_only = [a.arg for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is None]
        variadic = arguments.vararg is not None or arguments.kwarg is not None
        problem, warning = signature_problem(positional, keyword_only, variadic)
        if problem:
            self.error(function, problem)
        if warning:
            self.result.warnings.append(warning)

    def walk(self) -> None:
        for node in ast.walk(self.tree):
            banned = _BANNED_NODES.get(type(node))
            if banned:
                self.error(node, banned + ".")
            elif isinstance(node, ast.FunctionDef | ast.Lambda):
                self.function_node(node)
            elif isinstance(node, ast.Import | ast.ImportFrom) and self.parents.get(node) is not self.tree:
                self.error(node, "imports are allowed only at the top of the module, not inside functions.")
            elif isinstance(node, ast.Name):
                self.name_node(node)
            elif isinstance(node, ast.Attribute):
                self.attribute_node(node)
            elif isinstance(node, ast.Call):
                self.call_node(node)
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
                self.error(
                    node,
                    "item assignment (`x[...] = v`) changes a tensor or list in place; build a new tensor instead "
                    "(`torch.where`, `torch.cat`, `torch.stack`).",
                )
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.binding(node, node.name, "an exception variable")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
                text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
                if node not in self.docstrings and "__" in text:
                    self.error(
                        node, "string constants may not contain '__' (it is used to reach interpreter internals)."
                    )
            elif isinstance(node, ast.While) and _endless(node):
                self.error(
                    node,
                    "this `while` loop never ends (a constant true condition and no `break`); use tensor operations.",
                )

    def binding(self, node: ast.AST, name: str, what: str) -> None:
        """A name bound by ``node`` (a variable, parameter, function...): never a dunder, module or unsafe builtin."""
        if name.startswith("__"):
            self.dunder(node, name)
        elif name in allowed.MODULE_NAMES:
            self.error(node, f"do not rebind the module name `{name}` (here as {what}); choose another name.")
        elif name in allowed.UNSAFE_BUILTINS:
            self.error(node, f"`{name}` is the name of a Python builtin; choose another name for {what}.")

    def function_node(self, node: ast.FunctionDef | ast.Lambda) -> None:
        if isinstance(node, ast.FunctionDef):
            if node.decorator_list:
                self.error(node, f"decorators are not allowed (on `{node.name}`); write plain functions.")
            self.binding(node, node.name, "a function")
        arguments = node.args
        every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
        for argument in filter(None, every):
            self.binding(node, argument.arg, "a parameter")
        positional = [*arguments.posonlyargs, *arguments.args]
        defaults = list(zip(positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True))
        defaults += [(a, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is not None]
        for argument, default in defaults:
            if not self.is_constant(default, immutable=True):
                self.error(
                    node,
                    f"the default value of `{argument.arg}` must be an immutable constant (a number, string, None or "
                    "a tuple of them); a mutable default keeps state between calls.",
                )

    def name_node(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            self.binding(node, node.id, "a variable")
        elif node.id.startswith("__"):
            self.dunder(node, node.id)
        elif node.id in allowed.MODULE_NAMES:
            self.used.setdefault(node.id, node)
            parent = self.parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                self.error(
                    node,
                    f"the module `{node.id}` may only be used as `{node.id}.<function>`; do not pass it around or "
                    "assign it.",
                )
        elif node.id in allowed.UNSAFE_BUILTINS and not (
            node in self.annotations and node.id in allowed.ANNOTATION_BUILTINS
        ):
            exception = node.id.endswith(("Error", "Exception", "Exit", "Interrupt", "Iteration", "Warning"))
            kind, names = ("exception", allowed.SAFE_EXCEPTIONS) if exception else ("builtin", allowed.SAFE_BUILTINS)
            self.error(
                node,
                f"`{node.id}` is not allowed: it is a Python {kind} outside the allowed set "
                f"({', '.join(sorted(names))})" + ("." if exception else "; use tensor operations."),
            )
        elif not self.constants.get(node.id, True) and node in self.in_functions:
            self.error(node, f"`{node.id}` is metadata for the library and may not be used inside functions.")

    def attribute_node(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self.error(node, f"assigning or deleting the attribute `.{node.attr}` is not allowed; use local variables.")
        if node in self.chained:
            return
        links: list[ast.Attribute] = [node]  # the chain a.b.c, outermost first
        while isinstance(links[-1].value, ast.Attribute):
            links.append(links[-1].value)  # type: ignore[arg-type]
        self.chained.update(links)
        root = links[-1].value
        namespace = root.id if isinstance(root, ast.Name) and root.id in allowed.MODULE_NAMES else ""
        for link in reversed(links):  # innermost first: report the first link that is not allowed, only
            if link.attr.startswith("_"):
                self.error(link, f"the attribute `.{link.attr}` is private or a dunder; use public torch functions.")
                return
            if namespace == "torch" and link.attr == "special" and link is not node:
                namespace = "torch.special"
                continue
            allowed_here = allowed.NAMESPACES[namespace]
            if namespace == "torch" and link in self.annotations:
                allowed_here = allowed_here | allowed.TORCH_ANNOTATIONS
            if link.attr not in allowed_here:
                self.error(link, allowed.refusal(link.attr, namespace))
                return
            namespace = ""  # what follows is an attribute of the value
        if isinstance(root, ast.Name) and node.attr in allowed.POSITIONAL_LIMITS.get(root.id, {}) and len(links) == 1:
            parent = self.parents.get(node)
            if not (isinstance(parent, ast.Call) and parent.func is node):  # an alias would hide the limit
                self.error(node, f"call `{root.id}.{node.attr}(...)` directly; do not assign or pass it.")

    def call_node(self, node: ast.Call) -> None:
        for keyword in node.keywords:
            if keyword.arg is None:
                self.error(node, "`**` unpacking in a call is not allowed; pass keyword arguments by name.")
            elif keyword.arg.startswith("__"):
                self.dunder(node, keyword.arg)
            elif keyword.arg in ("out", "inplace") and ast.unparse(keyword.value) not in ("None", "False"):
                self.error(
                    node,
                    f"`{keyword.arg}=` writes into an existing tensor in place; drop it and use the returned value.",
                )
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            limit = allowed.POSITIONAL_LIMITS.get(func.value.id, {}).get(func.attr)
            starred = any(isinstance(argument, ast.Starred) for argument in node.args)
            if limit is not None and (starred or len(node.args) > limit):
                self.error(
                    node,
                    f"`{func.value.id}.{func.attr}` takes at most {limit} positional argument(s) here: the next one "
                    "writes into a tensor in place (`out`/`inplace`); pass further arguments by keyword.",
                )


def _endless(node: ast.While) -> bool:
    always = isinstance(node.test, ast.Constant) and bool(node.test.value)
    return always and not any(isinstance(inner, ast.Break) for inner in ast.walk(node))


def check_policy(source: str) -> PolicyResult:
    """Screen ``source`` against the contract and the allowlist; never executes it."""
    if len(source) > MAX_SOURCE_CHARS:
        too_long = (
            f"the source has {len(source):,} characters, over the {MAX_SOURCE_CHARS:,} limit; shorten it "
            "(drop unused helpers and long comments)."
        )
        return PolicyResult(errors=[too_long])
    try:
        tree = parse_source(source)
    except SyntaxError as exc:
        return PolicyResult(errors=[f"the code is not valid Python (line {exc.lineno}: {exc.msg})."])
    except (ValueError, RecursionError, MemoryError) as exc:
        return PolicyResult(errors=[f"the code cannot be parsed as Python ({type(exc).__name__})."])
    return _Screen(tree).run()


__all__ = ["CONTRACT_PARAMETERS", "MAX_ERRORS", "MAX_SOURCE_CHARS", "PolicyResult", "check_policy"]
