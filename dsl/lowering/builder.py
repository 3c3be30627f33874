"""The lowering's state and how it builds the graph: recorded errors (and the poison that
keeps one failure from causing more), scopes and their names, and the nodes themselves
(`emit` with shape inference, constants, parameters).

Scopes: a builtin layer call (`LayerNorm(x)`) or a block call with `as NAME` opens a
scope; so do `layer NAME { ... }` and each iteration of `repeat N as NAME` (`NAME.i`).
Unnamed layer calls take their lowercased name, numbered within the scope
(`layernorm`, `layernorm_1`); an unnamed block call is inlined in the current scope.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import ast
from ..dims import shape_str
from ..errors import MAX_ERRORS, ArchError, ArchErrors, Span
from ..graph import Graph
from ..ops import OPS, REQUIRED, TT, ShapeError, infer
from ..program import Program
from ..values import MAX_NODES, Tensor, _show

DTYPES = {"float": "float32", "float32": "float32", "float64": "float64", "int": "int64",
          "bool": "bool"}


class _Poison:
    """The value of a name whose definition failed (its error is already recorded)."""

    def __repr__(self) -> str:
        return "POISON"


POISON = _Poison()


class _Reported(ArchError):
    """A use of a poisoned value: a consequence of a recorded error, never shown."""

    def __init__(self):
        super().__init__("(already reported)")


class TooBig(ArchError):
    """A bound on the model's size was passed: lowering stops at once (going on would
    only pass it again, at the cost of the work the bound is there to save)."""


def unpoisoned(*values) -> None:
    for v in values:
        if v is POISON or (isinstance(v, (list, tuple)) and any(x is POISON for x in v)):
            raise _Reported()


def defined_names(stmt) -> list[str]:
    """Names a statement (and any body inside it) binds: poisoned if it fails."""
    if isinstance(stmt, ast.Assign):
        return list(stmt.targets)
    if isinstance(stmt, ast.ParamDecl):
        return [stmt.name]
    inner = tuple(getattr(stmt, "body", ())) + tuple(getattr(stmt, "orelse", ()))
    return [n for s in inner for n in defined_names(s)]


class GraphBuilder:
    """Semantic errors are recorded and lowering goes on with the next statement (names the
    failed statement defines are poisoned, so their uses add no follow-on errors); the
    recorded errors are raised together at the end."""

    def __init__(self, prog: Program, config: dict[str, Any] | None = None):
        self.prog = prog
        self.overrides = dict(config or {})     # config constants set from outside
        self.g = Graph()
        self.consts: dict[str, Any] = {}
        self.scope: list[str] = []
        self.scope_owner: dict[str, Span] = {}   # explicit scope name -> where it was named
        self.name_counts: dict[tuple[str, str], int] = {}
        self.param_spans: dict[str, Span] = {}
        self.call_stack: list[str] = []
        self.errors: list[ArchError] = []
        self.error_keys: set = set()
        self.repeat_factor = 1     # how many times the enclosing repeats run this code

    def record(self, err: ArchError) -> None:
        """Keep an error and carry on; a repeat or a second call of a block repeats none."""
        if isinstance(err, _Reported):
            return
        if isinstance(err, TooBig) or len(self.g) > MAX_NODES:
            raise err
        for e in getattr(err, "errors", [err]):
            key = (e.span, e.message)
            if key not in self.error_keys:
                self.error_keys.add(key)
                self.errors.append(e)
        if len(self.errors) >= MAX_ERRORS:
            self.raise_recorded()

    def raise_recorded(self) -> None:
        if self.errors:
            raise self.errors[0] if len(self.errors) == 1 else ArchErrors(self.errors)

    # ----- scopes
    @property
    def scope_name(self) -> str:
        return ".".join(self.scope)

    def full(self, name: str) -> str:
        return f"{self.scope_name}.{name}" if self.scope else name

    @contextmanager
    def in_scope(self, name: str):
        self.scope.append(name)
        try:
            yield
        finally:
            self.scope.pop()

    def claim_scope(self, name: str | None, default: str, span: Span) -> str:
        """The scope name for a layer call: explicit names must be unique in their parent."""
        if name is not None:
            full = self.full(name)
            if full in self.scope_owner:
                raise ArchError(f"the name `{name}` is already used in this scope", span,
                                "give each layer its own name with `as`",
                                notes=[f"first used at {self.scope_owner[full]}"])
            self.scope_owner[full] = span
            return name
        key = (self.scope_name, default)
        while True:
            n = self.name_counts.get(key, 0)
            self.name_counts[key] = n + 1
            candidate = default if n == 0 else f"{default}_{n}"
            if self.full(candidate) not in self.scope_owner:
                self.scope_owner[self.full(candidate)] = span
                return candidate

    # ----- graph building used by expressions and layer macros
    def check_growth(self, span: Span, where: str = "",
                     hint: str = "check the sizes that count layers, experts or repeats") -> None:
        # a layer macro looping over `experts = 1000000000` must stop here, not hang
        if len(self.g) > MAX_NODES:
            raise TooBig(f"the model grows past {MAX_NODES:,} graph nodes{where}", span, hint)

    def project_growth(self, per_iteration: int, count: int, outer: int, span: Span) -> None:
        """After a repeat's first iteration: the iterations are the same statements, so the
        rest (and the enclosing repeats' other iterations) will add as much again. Said now,
        rather than after building 100,000 nodes."""
        total = len(self.g) + per_iteration * (count * outer - 1)
        if total > MAX_NODES:
            raise TooBig(f"the model would grow past {MAX_NODES:,} graph nodes: this repeat "
                            f"adds {per_iteration:,} per iteration and runs {count:,} times"
                            + (f", inside repeats that run it {outer:,} times" if outer > 1
                               else ""), span,
                            "check the repeat counts; nested repeats multiply")

    def emit(self, op: str, args: list[Tensor], attrs: dict, span: Span,
             name: str | None = None) -> Tensor | tuple[Tensor, ...]:
        spec = OPS[op]
        self.check_growth(span)
        try:
            out = infer(op, [a.tt for a in args], attrs)
        except ShapeError as e:
            notes = []
            for i, a in enumerate(args):
                if a.origin is not None and (e.arg is None or e.arg == i or len(args) <= 2):
                    arg_name = spec.inputs[min(i, len(spec.inputs) - 1)].strip("*?")
                    notes.append(f"`{arg_name}` is {a.tt}, from {a.origin}")
            raise ArchError(f"{op}: {e.message}" if not e.message.startswith(op) else e.message,
                            span, e.hint, notes) from None
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as e:
            # attributes reach inference unvalidated (`reshape(x, [-1e400, R])`); --debug
            # still shows the original exception, in case the inference itself is wrong
            given = ", ".join(f"{k}={_show(v)}" for k, v in attrs.items())
            raise ArchError(f"{op}: cannot use these arguments ({given}): {e}", span,
                            self.signature_hint(spec)) from e
        clean_attrs = {k: v for k, v in attrs.items()}
        ids = [a.node for a in args]
        if not isinstance(out, TT):
            nid = self.g.add(op, ids, shape=None, dtype="tuple", attrs=clean_attrs, span=span,
                             scope=self.scope_name, name=name,
                             parts=tuple((t.shape, t.dtype) for t in out))
            return tuple(
                Tensor(self.g.add("getitem", [nid], shape=t.shape, dtype=t.dtype,
                                  attrs={"index": i}, span=span, scope=self.scope_name,
                                  name=f"{nid}.{i}"), t, span)
                for i, t in enumerate(out))
        nid = self.g.add(op, ids, shape=out.shape, dtype=out.dtype, attrs=clean_attrs, span=span,
                         scope=self.scope_name, name=name)
        return Tensor(nid, out, span)

    def const(self, value, span: Span, dtype: str | None = None) -> Tensor:
        arr = np.asarray(value)
        if dtype is None:
            dtype = "float32" if arr.dtype.kind == "f" else ("bool" if arr.dtype.kind == "b"
                                                              else "int64")
        with np.errstate(over="ignore", invalid="ignore"):
            cast = arr.astype(dtype)
        if cast.dtype.kind == "f" and np.isinf(cast).any() \
                and not np.isinf(arr.astype(np.float64)).any():
            raise ArchError(f"{_show(value)} does not fit in {dtype} (it becomes infinite)",
                            span, "float32 goes up to about 3.4e38")
        arr = cast
        nid = self.g.add("const", [], shape=arr.shape, dtype=dtype, attrs={"value": arr},
                         span=span, scope=self.scope_name)
        return Tensor(nid, TT(arr.shape, dtype), span)

    def param(self, name: str, shape, span: Span, init: str = "normal", std: float = 0.02,
              value: np.ndarray | None = None, dtype: str = "float32") -> Tensor:
        for d in shape:
            if not isinstance(d, int):
                raise ArchError(f"parameter `{name}` has symbolic size {d} in "
                                f"{shape_str(shape)}; parameter sizes must be known numbers",
                                span, "use config constants for parameter sizes")
            if d < 0:
                raise ArchError(f"parameter `{name}` has negative size in {shape_str(shape)}",
                                span)
            if d == 0:
                raise ArchError(f"parameter `{name}` has a zero size in {shape_str(shape)}",
                                span, "a layer of width 0 computes nothing; check the sizes")
        self.check_growth(span)
        full = self.full(name)
        if full in self.param_spans:
            raise ArchError(f"parameter `{full}` is defined twice", span,
                            "name the layers apart with `as`",
                            notes=[f"first defined at {self.param_spans[full]}"])
        self.param_spans[full] = span
        attrs = {"name": full, "init": init, "std": std}
        if value is not None:
            attrs["value"] = value
        nid = self.g.add("param", [], shape=tuple(shape), dtype=dtype, attrs=attrs, span=span,
                         scope=self.scope_name, name=full)
        return Tensor(nid, TT(tuple(shape), dtype), span)

    @staticmethod
    def signature_hint(spec) -> str:
        parts = [n for n in spec.inputs] + [f"{k}={v!r}" if v is not REQUIRED else k
                                            for k, v in spec.attrs.items()]
        return f"usage: {spec.name}({', '.join(parts)})"
