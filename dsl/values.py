"""The values of the lowering: a `Tensor` handle on a graph node, how a value is named in
an error (`describe`), and the bounds that turn hostile or mistyped sizes into errors.

Shared by the lowering (dsl/lowering/) and the layers (dsl/layers/), which both make and
check these values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dims import Dim
from .errors import ArchError, Span
from .literals import MAX_INT
from .ops import TT

# Bounds that turn hostile or mistyped input into errors instead of hangs, OOMs or a
# RecursionError: sizes are int64, and a model has at most this many layers and nodes.
MAX_REPEAT = 10_000
MAX_NODES = 100_000
MAX_CALL_DEPTH = 50


def bounded(v, span: Span):
    """`v`, unless it is a whole number (or a size's coefficient) beyond int64."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and abs(v) > MAX_INT:
        raise ArchError(f"number too large: {_short(v)} exceeds {MAX_INT} (int64)", span)
    if isinstance(v, Dim) and any(abs(c) > MAX_INT for _, c in v.terms):
        raise ArchError(f"size too large: a coefficient of it exceeds {MAX_INT} (int64)", span)
    return v


def _show(v) -> str:
    """An attribute as the user wrote it: sizes by name, lists in brackets."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v) if isinstance(v, Dim) else repr(v)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _short(n: int) -> str:
    digits = len(str(abs(n))) if n.bit_length() < 10_000 else int(n.bit_length() * 0.30103)
    return str(n) if digits <= 30 else f"a {digits}-digit number"


@dataclass(frozen=True)
class Tensor:
    """A graph value during lowering: its node, type, and where it was made."""
    node: str
    tt: TT
    origin: Span | None

    @property
    def shape(self):
        return self.tt.shape

    @property
    def dtype(self) -> str:
        return self.tt.dtype


def describe(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"tensor {v.tt}"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, (int, Dim)):
        return f"the size {v}"
    if isinstance(v, float):
        return f"the number {v}"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)}"
    return "none" if v is None else type(v).__name__


def same_value(a, b) -> bool:
    """Equality as a user reads it: `true == 1` is false (a bool is not a number)."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b
