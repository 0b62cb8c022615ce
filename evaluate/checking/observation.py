"""What one call of a candidate loss did, as raw facts: the only thing the checker learns from candidate code.

The checker's verdicts (shape, finiteness, learning signal, determinism, profile, fingerprint) are computed
in the parent process, never where the candidate runs: code in a process can rewrite anything in that
process, its checker included. So the process that runs the candidate only answers ``CallRequest``s with
``Observation``s (``observe_call``), and the verdict code in ``runtime_checks``, ``fingerprint`` and
``profile`` reads observations through an ``Observer``:

- ``LocalObserver(fn)``: calls a trusted function in this process (the library, ``evolve``'s own renderings);
- ``lossforge.evaluate.checking.sandbox.SandboxObserver``: asks the locked-down child that runs untrusted code.

A candidate can make an observation say anything about its own outputs (which is what a loss is allowed to
choose), but nothing else. Observations travel as JSON: float tensors as lists of float64 values plus their
dtype (exact for float64, float32 and bfloat16), non-finite values as JSON's ``NaN``/``Infinity``.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from lossforge.candidates import LossFn
from lossforge.evaluate.contract import INPUT_NAMES, LogpBatch, describe_error, shape_problem, takes_lengths

MAX_TYPE_NAME_CHARS = 40
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class CallRequest:
    """One call to make: the four inputs (any float dtype; sent as float64 values), beta, and whether the
    policy inputs require grad (then the gradients of the summed output are observed too)."""

    batch: LogpBatch
    beta: float
    with_grad: bool = True

    @property
    def dtype(self) -> torch.dtype:
        return self.batch.policy_chosen.dtype

    def to_json(self) -> dict[str, Any]:
        batch = self.batch
        values = [t.detach().to(torch.float64).tolist() for t in batch.tensors()]
        lengths = None
        if batch.chosen_lengths is not None and batch.rejected_lengths is not None:
            lengths = [t.detach().to(torch.float64).tolist() for t in (batch.chosen_lengths, batch.rejected_lengths)]
        return {
            "inputs": values,
            "lengths": lengths,
            "dtype": dtype_name(self.dtype),
            "beta": self.beta,
            "with_grad": self.with_grad,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallRequest:
        dtype = _DTYPES[data["dtype"]]
        tensors = [torch.tensor(values, dtype=torch.float64).to(dtype) for values in data["inputs"]]
        lengths = [torch.tensor(values, dtype=torch.float64).to(dtype) for values in data["lengths"] or ()]
        return cls(LogpBatch(*tensors, *lengths), float(data["beta"]), bool(data["with_grad"]))


@dataclass(frozen=True)
class Observation:
    """What a call did. ``error`` is set when the call raised (``error_type``, ``error``: "TypeError: ...") or
    could not be made (``error_type`` ``"timeout"`` or ``"stopped"``); otherwise ``returned`` is the type name of
    the result and, for a tensor, ``shape``/``dtype``/``values`` (float, flattened) describe it.

    ``grad_chosen``/``grad_rejected``: d sum(output) / d policy input, None where the output does not depend
    on it or gradients were not asked for; ``backward_error`` when back-propagation raised. ``modified``: the
    inputs the call changed in place. ``seconds``: wall time of the call as the caller measured it.
    """

    returned: str = "Tensor"
    shape: tuple[int, ...] = ()
    dtype: str = ""
    floating: bool = True
    values: torch.Tensor | None = None
    requires_grad: bool = False
    has_grad_fn: bool = False
    grad_chosen: torch.Tensor | None = None
    grad_rejected: torch.Tensor | None = None
    backward_error: str | None = None
    modified: tuple[str, ...] = ()
    took_lengths: bool = False  # the loss names chosen_lengths and rejected_lengths (for wording only)
    error_type: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def output_problem(self, size: int, where: str = "") -> str | None:
        """The contract's sentence for a result that is not a floating (size,) tensor, or None."""
        return shape_problem(self.returned, self.shape, self.dtype, self.floating, size, where)

    def to_json(self) -> dict[str, Any]:
        def floats(tensor: torch.Tensor | None) -> list[float] | None:
            return None if tensor is None else tensor.detach().to(torch.float64).flatten().tolist()

        return {
            "returned": self.returned,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "floating": self.floating,
            "values": floats(self.values),
            "requires_grad": self.requires_grad,
            "has_grad_fn": self.has_grad_fn,
            "grad_chosen": floats(self.grad_chosen),
            "grad_rejected": floats(self.grad_rejected),
            "grad_dtype": None if self.grad_chosen is None else dtype_name(self.grad_chosen.dtype),
            "backward_error": self.backward_error,
            "modified": list(self.modified),
            "error_type": self.error_type,
            "error": self.error,
            "took_lengths": self.took_lengths,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], seconds: float) -> Observation:
        """Rebuild from what a child sent; raises ``ValueError`` for anything malformed (a hostile child)."""
        try:
            shape = tuple(int(n) for n in data["shape"])
            dtype = str(data["dtype"])
            values = _tensor(data["values"], dtype, math.prod(shape))
            grad_dtype = str(data["grad_dtype"]) if data["grad_dtype"] is not None else dtype
            return cls(
                returned=str(data["returned"])[:MAX_TYPE_NAME_CHARS],
                shape=shape,
                dtype=dtype,
                floating=bool(data["floating"]),
                values=values,
                requires_grad=bool(data["requires_grad"]),
                has_grad_fn=bool(data["has_grad_fn"]),
                grad_chosen=_tensor(data["grad_chosen"], grad_dtype, None),
                grad_rejected=_tensor(data["grad_rejected"], grad_dtype, None),
                backward_error=_text(data["backward_error"]),
                modified=_modified(data["modified"]),
                error_type=_text(data["error_type"]),
                error=_text(data["error"]),
                seconds=seconds,
                took_lengths=bool(data.get("took_lengths", False)),
            )
        except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as exc:
            raise ValueError(f"malformed observation: {describe_error(exc)}") from None


def _tensor(values: Any, dtype: str, expected: int | None) -> torch.Tensor | None:
    if values is None:
        return None
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        raise ValueError("values must be a list of numbers")
    if expected is not None and len(values) != expected:
        raise ValueError(f"{len(values)} values for {expected} elements")
    tensor = torch.tensor(values, dtype=torch.float64)
    return tensor.to(_DTYPES[dtype]) if dtype in _DTYPES else tensor


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:2000]


def _modified(names: Any) -> tuple[str, ...]:
    return tuple(name for name in INPUT_NAMES if name in [str(n) for n in names])


class Observer(ABC):
    """Answers ``CallRequest``s about one loss; the checker's verdict code reads a loss only through this."""

    per_call_seconds: float | None = None

    @abstractmethod
    def observe(self, request: CallRequest) -> Observation: ...


class CallTimeout(BaseException):
    """Raised by the alarm inside a call that overran; a BaseException so ``except Exception`` cannot eat it."""


def _alarm(signum: int, frame: Any) -> None:
    raise CallTimeout()


class LocalObserver(Observer):
    """Calls ``fn`` in this process: for trusted code only (the library, evolve's renderings, tests).

    ``per_call_seconds`` bounds each call with SIGALRM, which only the main thread can set; None leaves calls
    unbounded.
    """

    def __init__(self, fn: LossFn, per_call_seconds: float | None = None) -> None:
        self.fn = fn
        self.per_call_seconds = per_call_seconds

    def observe(self, request: CallRequest) -> Observation:
        limit = self.per_call_seconds
        previous = None
        if limit is not None:
            previous = signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, limit)
        start = time.perf_counter()
        try:
            observation = observe_call(self.fn, request)
        except CallTimeout:
            observation = Observation(error_type="timeout", error=f"did not return within {limit:g} s")
        finally:
            if limit is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        return Observation(**{**observation.__dict__, "seconds": time.perf_counter() - start})


def observer_for(loss: LossFn | Observer, per_call_seconds: float | None = None) -> Observer:
    """``loss`` itself when it is an ``Observer``, else a ``LocalObserver`` of the (trusted) function."""
    return loss if isinstance(loss, Observer) else LocalObserver(loss, per_call_seconds)


def observe_call(fn: LossFn, request: CallRequest) -> Observation:
    """Call ``fn`` on fresh leaves of the request's inputs and report what happened. No verdict is made here:
    this runs where the candidate runs. Only ``CallTimeout`` (the local alarm) propagates."""
    inputs = request.batch.leaves(requires_grad=request.with_grad)
    tensors = inputs.tensors()
    lengths = inputs.length_arguments() if takes_lengths(fn) else {}
    snapshot = [t.detach().clone() for t in tensors]
    versions = [t._version for t in tensors]
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            output = fn(*tensors, request.beta, **lengths)
            modified = tuple(
                name
                for name, before, version, tensor in zip(INPUT_NAMES, snapshot, versions, tensors, strict=True)
                if tensor._version != version or not torch.equal(before, tensor.detach())
            )
            if not isinstance(output, torch.Tensor):
                return Observation(returned=type(output).__name__[:MAX_TYPE_NAME_CHARS], modified=modified)
            described = Observation(
                shape=tuple(output.shape),
                dtype=dtype_name(output.dtype),
                floating=output.is_floating_point(),
                values=output.detach().flatten(),
                requires_grad=output.requires_grad,
                has_grad_fn=output.grad_fn is not None,
                modified=modified,
                took_lengths=bool(lengths),
            )
            if not (request.with_grad and output.requires_grad and output.is_floating_point()):
                return described
            try:
                chosen, rejected = torch.autograd.grad(
                    output.sum(), (inputs.policy_chosen, inputs.policy_rejected), allow_unused=True
                )  # (B,), (B,)
            except CallTimeout:
                raise
            except BaseException as exc:  # noqa: BLE001 - the candidate's autograd functions run here too
                return Observation(**{**described.__dict__, "backward_error": describe_error(exc)})
            return Observation(**{**described.__dict__, "grad_chosen": chosen, "grad_rejected": rejected})
    except CallTimeout:
        raise
    except BaseException as exc:  # noqa: BLE001 - hostile code may raise anything, SystemExit included
        return Observation(error_type=type(exc).__name__[:MAX_TYPE_NAME_CHARS], error=describe_error(exc))


__all__ = [
    "CallRequest",
    "CallTimeout",
    "LocalObserver",
    "Observation",
    "Observer",
    "dtype_name",
    "observe_call",
    "observer_for",
]
