"""Static policy: screen a candidate's source on its AST before anything runs.

The contract (see DESIGN.md, "The loss contract"): module level holds a docstring, imports of ``torch``,
``torch.nn.functional`` and ``math`` (plus torch's ``special``, ``linalg`` and ``fft``), numeric and
string/list-of-string constants, private ``_helper`` functions and exactly one public function
``loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta)``.

Every attribute chain that starts at an imported module is resolved against the real module, because torch
re-exports the modules it imports (``torch.os``, ``torch.sys``, ``torch.ctypes``, ``torch.builtins``): a chain
may only pass through the allowed modules. Denied everywhere: private and dunder attributes (``x._C``,
``x.__class__``), the torch namespaces that reach files, processes, the network, native code or global state,
the builtins that execute, import or look up code by name (``eval``, ``getattr``...), frame and generator
attributes (``gi_frame``, ``f_builtins``: a generator expression reaches the builtins without any dunder),
classes of torch other than a few value types (file writers, storages, TorchScript), strings containing
``__`` (``"{0.__class__}".format``), attribute assignment, classes, decorators, ``global``, generators,
``match`` (class patterns read attributes by name).

All errors are collected, each a sentence an LLM can act on. The policy is one layer: the sandbox's
runtime protections hold without it.
"""

from __future__ import annotations

import ast
import importlib
import types
from dataclasses import dataclass, field

from lossforge.candidates import parse_source
from lossforge.evaluate.contract import CONTRACT_PARAMETERS

MAX_SOURCE_CHARS = 20_000
MAX_ERRORS = 20
ALLOWED_MODULES = frozenset(
    {"torch", "torch.nn", "torch.nn.functional", "torch.special", "torch.linalg", "torch.fft", "math"}
)
ALLOWED_IMPORTS_TEXT = "torch, torch.nn.functional (as F) and math"
# torch namespaces that reach files, processes, the network, native code or global state.
FORBIDDEN_NAMESPACES = frozenset({
    "load", "save", "hub", "ops", "classes", "utils", "distributed", "multiprocessing", "backends", "jit",
    "library", "compile", "compiler", "cuda", "mps", "xpu", "mtia", "fx", "export", "onnx", "package",
    "profiler", "testing", "overrides", "random", "serialization", "cpp", "monitor", "futures", "autograd",
    "manual_seed", "seed", "initial_seed", "fork_rng", "use_deterministic_algorithms", "fork", "wait",
    "import_ir_module", "import_ir_module_from_buffer", "get_file_path", "prepare_multiprocessing_environment",
    "get_device_module", "init_num_threads", "thread_safe_generator", "get_rng_state",
})  # fmt: skip
# Classes of the allowed modules a loss may name; the others (storages, TorchScript, file readers and writers,
# nn.Module) open files, load native code or hold state.
ALLOWED_CLASSES = frozenset({"Tensor", "finfo", "iinfo", "dtype", "Size", "device"})
# Frame, generator, coroutine, traceback and code attributes lead to f_globals/f_builtins without a dunder.
FORBIDDEN_ATTRIBUTE_PREFIXES = ("_", "f_", "gi_", "cr_", "ag_", "tb_", "co_")
# Tensor methods and other attributes that touch raw memory, files, hooks or gradients of the caller.
FORBIDDEN_ATTRIBUTES = frozenset({
    "storage", "untyped_storage", "data_ptr", "share_memory_", "pin_memory", "record_stream", "register_hook",
    "register_post_accumulate_grad_hook", "as_strided", "as_strided_", "from_file", "frombuffer", "from_dlpack",
    "to_dlpack", "backward", "numpy", "tofile", "dump", "dumps", "format", "format_map", "mro",
})  # fmt: skip
FORBIDDEN_BUILTINS = frozenset({
    "eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "hasattr", "globals", "locals", "vars",
    "dir", "input", "breakpoint", "help", "print", "exit", "quit", "memoryview", "type", "super", "object",
    "classmethod", "staticmethod", "property", "copyright", "credits", "license",
})  # fmt: skip
MATH_CONSTANTS = frozenset({"pi", "e", "tau", "inf", "nan"})
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
        self.modules: dict[str, types.ModuleType] = {}  # names bound to modules by imports
        self.constants: set[str] = set()
        self.parents: dict[ast.AST, ast.AST] = {}
        self.docstrings: set[ast.AST] = set()

    def error(self, node: ast.AST | None, message: str) -> None:
        line = getattr(node, "lineno", None)
        text = f"line {line}: {message}" if line else message
        if text not in self.result.errors and len(self.result.errors) < MAX_ERRORS:
            self.result.errors.append(text)

    # ----------------------------------------------------------------- module level

    def run(self) -> PolicyResult:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Module | ast.FunctionDef) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    self.docstrings.add(first.value)
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
            self.error(
                None, "no function `loss` is defined; define `def loss(" + ", ".join(CONTRACT_PARAMETERS) + "):`."
            )
        elif loss_defs > 1:
            self.error(None, f"`loss` is defined {loss_defs} times; define it exactly once.")
        self.walk()
        return self.result

    def import_statement(self, statement: ast.Import | ast.ImportFrom) -> None:
        if isinstance(statement, ast.ImportFrom):
            if statement.module == "__future__" and statement.level == 0:
                return
            module = self.allowed_module(statement, statement.module or "", statement.level)
            if module is None:
                return
            for alias in statement.names:
                if alias.name == "*":
                    self.error(
                        statement, f"`from {statement.module} import *` is not allowed; import names explicitly."
                    )
                    continue
                value = self.resolve(statement, module, [alias.name], f"{statement.module}.{alias.name}")
                if isinstance(value, types.ModuleType):
                    self.modules[alias.asname or alias.name] = value
            return
        for alias in statement.names:
            module = self.allowed_module(statement, alias.name, 0)
            if module is not None:
                bound = alias.asname or alias.name.partition(".")[0]
                self.modules[bound] = module if alias.asname else importlib.import_module(bound)

    def allowed_module(self, node: ast.AST, name: str, level: int) -> types.ModuleType | None:
        if level or name not in ALLOWED_MODULES:
            self.error(
                node,
                f"importing `{'.' * level}{name}` is not allowed; candidates may import only {ALLOWED_IMPORTS_TEXT}.",
            )
            return None
        return importlib.import_module(name)

    def constant_statement(self, statement: ast.Assign | ast.AnnAssign) -> None:
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        for target in targets:
            if not isinstance(target, ast.Name):
                self.error(statement, "module-level assignments must bind a single name (`TAU = 0.05`).")
                continue
            if target.id == "loss" or target.id in self.modules:
                self.error(statement, f"do not rebind `{target.id}` at module level.")
            self.constants.add(target.id)
        if statement.value is None or not self.is_constant(statement.value):
            self.error(
                statement,
                "module-level values must be numeric constants or strings/lists of strings (metadata); compute "
                "anything else inside `loss`.",
            )

    def is_constant(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return node.value is None or isinstance(node.value, int | float | str)
        if isinstance(node, ast.List | ast.Tuple):
            return all(self.is_constant(element) for element in node.elts)
        if isinstance(node, ast.UnaryOp):
            return isinstance(node.op, ast.USub | ast.UAdd) and self.is_constant(node.operand)
        if isinstance(node, ast.BinOp):
            return not isinstance(node.op, ast.MatMult) and self.is_constant(node.left) and self.is_constant(node.right)
        if isinstance(node, ast.Name):
            return node.id in self.constants
        if isinstance(node, ast.Attribute):  # math.pi and friends
            return self.is_math(node.value) and node.attr in MATH_CONSTANTS
        if isinstance(node, ast.Call):  # math.log(2)
            return (
                isinstance(node.func, ast.Attribute) and self.is_math(node.func.value) and not node.keywords
                and all(self.is_constant(arg) for arg in node.args)
            )  # fmt: skip
        return False

    def is_math(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and getattr(self.modules.get(node.id), "__name__", "") == "math"

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
        if len(positional) != len(CONTRACT_PARAMETERS) or arguments.vararg or arguments.kwarg:
            self.error(
                function,
                f"`loss` takes {len(positional)} positional parameters; the contract is "
                f"loss({', '.join(CONTRACT_PARAMETERS)}).",
            )
        elif tuple(positional) != CONTRACT_PARAMETERS:
            self.result.warnings.append(
                f"`loss` parameters are named ({', '.join(positional)}); they are passed positionally in the order "
                f"({', '.join(CONTRACT_PARAMETERS)})."
            )
        if any(default is None for default in arguments.kw_defaults):
            self.error(
                function, "keyword-only parameters of `loss` must have defaults; the trainer passes five arguments."
            )

    # ----------------------------------------------------------------- every node

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
            elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
                if node not in self.docstrings and (
                    "__" in str(node.value) if isinstance(node.value, str) else b"__" in node.value
                ):
                    self.error(
                        node, "string constants may not contain '__' (it is used to reach interpreter internals)."
                    )
            elif isinstance(node, ast.While) and self.endless(node):
                self.error(
                    node,
                    "this `while` loop never ends (a constant true condition and no `break`); use tensor operations.",
                )

    def function_node(self, node: ast.FunctionDef | ast.Lambda) -> None:
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            self.error(node, f"decorators are not allowed (on `{node.name}`); write plain functions.")
        arguments = node.args
        for argument in arguments.posonlyargs + arguments.args + arguments.kwonlyargs:
            if argument.arg.startswith("__") or argument.arg in self.modules:
                self.error(node, f"the parameter name `{argument.arg}` is not allowed; rename it.")

    def name_node(self, node: ast.Name) -> None:
        if node.id.startswith("__"):
            self.error(node, f"`{node.id}` is not allowed: dunder names reach interpreter internals.")
        elif node.id in FORBIDDEN_BUILTINS and node.id not in self.constants:
            self.error(node, f"`{node.id}` is not allowed in a loss; use tensor operations only.")
        elif node.id in self.modules:
            parent = self.parents.get(node)
            if isinstance(node.ctx, ast.Store | ast.Del):
                self.error(node, f"do not rebind the module name `{node.id}`.")
            elif not (isinstance(parent, ast.Attribute) and parent.value is node):
                self.error(
                    node,
                    f"the module `{node.id}` may only be used as `{node.id}.<function>`; do not pass it around or "
                    "assign it.",
                )

    def attribute_node(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self.error(node, f"assigning or deleting the attribute `.{node.attr}` is not allowed; use local variables.")
        if not self.attribute_allowed(node, node.attr):
            return
        chain: list[str] = []
        base: ast.expr = node
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id in self.modules:
            self.resolve(node, self.modules[base.id], chain, ".".join([base.id, *chain]))

    def attribute_allowed(self, node: ast.AST, name: str) -> bool:
        if name.startswith("_"):
            self.error(
                node, f"the attribute `.{name}` is private or a dunder and may not be used; use public torch functions."
            )
        elif name.startswith(FORBIDDEN_ATTRIBUTE_PREFIXES):
            self.error(node, f"the attribute `.{name}` reaches interpreter frames or code objects and may not be used.")
        elif name in FORBIDDEN_NAMESPACES or name.startswith("set_"):
            self.error(
                node,
                f"`.{name}` is not allowed: it reaches files, processes, the network, native code or global state.",
            )
        elif name in FORBIDDEN_ATTRIBUTES:
            self.error(
                node, f"`.{name}` is not allowed in a loss (raw memory, files, hooks or gradients of the caller)."
            )
        else:
            return True
        return False

    def resolve(self, node: ast.AST, module: types.ModuleType, chain: list[str], text: str) -> object:
        """Follow ``chain`` from ``module`` without executing anything; only allowed modules may be passed."""
        value: object = module
        for position, name in enumerate(chain):
            if not self.attribute_allowed(node, name):
                return None
            if not isinstance(value, types.ModuleType):
                return value  # a function or class: what follows is checked by name only
            found = vars(value).get(name, _MISSING)  # vars(), not getattr: no module __getattr__ runs
            prefix = ".".join(text.split(".")[: position + 2])
            if found is _MISSING:
                self.error(
                    node, f"`{prefix}` does not exist; use a function that torch, torch.nn.functional or math provides."
                )
                return None
            if isinstance(found, type) and name not in ALLOWED_CLASSES:
                self.error(
                    node,
                    f"`{prefix}` is a class candidates may not use; only the classes {', '.join(sorted(ALLOWED_CLASSES))} "
                    "may be named (use tensor functions).",
                )
                return None
            if isinstance(found, types.ModuleType) and found.__name__ not in ALLOWED_MODULES:
                self.error(
                    node,
                    f"`{prefix}` is the module `{found.__name__}`, which candidates may not use; only "
                    f"{ALLOWED_IMPORTS_TEXT} are available.",
                )
                return None
            value = found
        return value

    def endless(self, node: ast.While) -> bool:
        always = isinstance(node.test, ast.Constant) and bool(node.test.value)
        return always and not any(isinstance(inner, ast.Break) for inner in ast.walk(node))


_MISSING = object()


def check_policy(source: str) -> PolicyResult:
    """Screen ``source`` against the contract; never executes it."""
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


__all__ = [
    "ALLOWED_MODULES", "CONTRACT_PARAMETERS", "FORBIDDEN_ATTRIBUTES", "FORBIDDEN_BUILTINS", "FORBIDDEN_NAMESPACES",
    "MAX_SOURCE_CHARS", "PolicyResult", "check_policy",
]  # fmt: skip
