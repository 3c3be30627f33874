"""Lower an .arch program to the layer graph, inferring shapes as it goes.

The lowering is an evaluator: config arithmetic and sizes are computed now (so shape
mismatches are reported at the line that caused them, before anything runs); tensor
expressions become graph nodes. Values during lowering are Python numbers, strings,
bools, lists, symbolic `Dim`s, or `Tensor` handles on graph nodes.

Scopes: a builtin layer call (`LayerNorm(x)`) or a block call with `as NAME` opens a
scope; so do `layer NAME { ... }` and each iteration of `repeat N as NAME` (`NAME.i`).
Unnamed layer calls take their lowercased name, numbered within the scope
(`layernorm`, `layernorm_1`); an unnamed block call is inlined in the current scope.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import ast
from .dims import Dim, DimLike, dim_add, dim_div, dim_mul, dim_neg, dim_sub, shape_str
from .errors import ArchError, ArchErrors, Span, did_you_mean
from .graph import Graph, RepeatInfo
from .layers import LAYERS
from .program import Program, load_program
from .ops import OPS, REQUIRED, TT, ShapeError, infer
from .values import (MAX_CALL_DEPTH, MAX_INT, MAX_NODES, MAX_REPEAT, Tensor,  # noqa: F401
                     _count, _show, bounded, describe)
from .weightmap import resolve as resolve_weights

DTYPES = {"float": "float32", "float32": "float32", "float64": "float64", "int": "int64",
          "bool": "bool"}
SCALAR_FUNCS = {"sqrt": math.sqrt, "exp": math.exp, "tanh": math.tanh, "log": math.log,
                "min": min, "max": max, "int": int, "float": float, "abs": abs}
INTERNAL_OPS = {"getitem"}
# ---- the lowering -----------------------------------------------------------------------

class _Poison:
    """The value of a name whose definition failed (its error is already recorded)."""

    def __repr__(self) -> str:
        return "POISON"


POISON = _Poison()
MAX_ERRORS = 20


class _Reported(ArchError):
    """A use of a poisoned value: a consequence of a recorded error, never shown."""

    def __init__(self):
        super().__init__("(already reported)")


def _unpoisoned(*values) -> None:
    for v in values:
        if v is POISON or (isinstance(v, (list, tuple)) and any(x is POISON for x in v)):
            raise _Reported()


def _defined_names(stmt) -> list[str]:
    """Names a statement (and any body inside it) binds: poisoned if it fails."""
    if isinstance(stmt, ast.Assign):
        return list(stmt.targets)
    if isinstance(stmt, ast.ParamDecl):
        return [stmt.name]
    return [n for s in getattr(stmt, "body", ()) for n in _defined_names(s)]


class Lowerer:
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

    def record(self, err: ArchError) -> None:
        """Keep an error and carry on; a repeat or a second call of a block repeats none."""
        if isinstance(err, _Reported):
            return
        if len(self.g) > MAX_NODES:
            raise err   # a bound: going on would only hit it again
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
    def check_growth(self, span: Span) -> None:
        # a layer macro looping over `experts = 1000000000` must stop here, not hang
        if len(self.g) > MAX_NODES:
            raise ArchError(f"the model grows past {MAX_NODES:,} graph nodes", span,
                            "check the sizes that count layers, experts or repeats")

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
        arr = arr.astype(dtype)
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

    # ----- entry point
    def lower_model(self, model: ast.Block) -> Graph:
        self.g.name = model.name
        self.g.meta["source"] = self.prog.path
        self.g.meta["files"] = list(self.prog.files)      # the main file and its includes
        names = [d.name for d in self.prog.consts]
        for k in self.overrides:
            if k not in names:
                raise ArchError(f"cannot set `{k}`: {self.prog.path} has no config constant "
                                f"`{k}`", None, did_you_mean(k, names))
        for d in self.prog.consts:
            # an override replaces only this definition; constants derived from it follow
            try:
                self.consts[d.name] = self.overrides[d.name] if d.name in self.overrides \
                    else self.eval(d.value, {}, const_only=True)
            except ArchError as e:
                self.record(e)
                self.consts[d.name] = POISON
        self.g.meta["config"] = {k: v for k, v in self.consts.items()
                                 if isinstance(v, (int, float, bool, str))}
        env: dict[str, Any] = {}
        for f in model.formals:
            try:
                self.model_input(f, env)
            except ArchError as e:
                self.record(e)
                env[f.name] = POISON
        try:
            result = self.run_body(model.body, env, model)
        except ArchError as e:   # raised between statements, e.g. code after `return`
            self.record(e)
        self.raise_recorded()
        return self.finish_model(model, result)

    def model_input(self, f: ast.Formal, env: dict) -> None:
        if not isinstance(f.type, ast.TensorType):
            raise ArchError(f"model input `{f.name}` needs a tensor type", f.span,
                            f"e.g. `{f.name}: float[B, T, d_model]` or `ids: int[B, T]`")
        if f.default is not None:
            raise ArchError("model inputs take no default value", f.default.span)
        shape = tuple(self.eval_dim(d, env, symbolic=True) for d in f.type.dims)
        dtype = DTYPES[f.type.dtype]
        nid = self.g.add("input", [], shape=shape, dtype=dtype, attrs={"name": f.name},
                         span=f.span, name=f"input.{f.name}" if f.name in self.g else f.name)
        self.g.inputs.append(nid)
        env[f.name] = Tensor(nid, TT(shape, dtype), f.span)

    def finish_model(self, model: ast.Block, result) -> Graph:
        if result is None:
            raise ArchError(f"model `{model.name}` returns nothing", model.span,
                            "end the model with `return name` (its outputs)")
        for name, value, span in result:
            if not isinstance(value, Tensor):
                raise ArchError(f"a model output must be a tensor, got {describe(value)}", span)
            if name in self.g.outputs:
                raise ArchError(f"output `{name}` is returned twice", span)
            self.g.outputs[name] = value.node
        params = [n.attrs["name"] for n in self.g.params()]
        self.g.meta["weight_maps"] = {
            name: resolve_weights(w, params, lambda e: self.eval(e, {}, const_only=True),
                                  self.consts)
            for name, w in self.prog.weights.items()}
        return self.g

    # ----- statements
    def run_body(self, body, env: dict, owner: ast.Block):
        for i, stmt in enumerate(body):
            try:
                result = self.exec(stmt, env, owner)
            except ArchError as e:
                self.record(e)
                for name in _defined_names(stmt):
                    env[name] = POISON
                if isinstance(stmt, ast.Return):
                    return [(None, POISON, stmt.span)]
                continue
            if result is not None:
                if i != len(body) - 1:
                    raise ArchError("code after `return` never runs", body[i + 1].span)
                return result
        return None

    def exec(self, stmt, env: dict, owner: ast.Block):
        if isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value, env)
            if len(stmt.targets) == 1 or value is POISON:
                env[stmt.targets[0]] = value
            else:
                if not isinstance(value, (tuple, list)) or len(value) != len(stmt.targets):
                    got = len(value) if isinstance(value, (tuple, list)) else 1
                    raise ArchError(f"{len(stmt.targets)} names on the left but the right side "
                                    f"gives {got} value{'s' if got != 1 else ''}", stmt.span)
                for t, v in zip(stmt.targets, value):
                    env[t] = v
            if value is POISON:
                for t in stmt.targets:
                    env[t] = POISON
            return None
        if isinstance(stmt, ast.Return):
            items = []
            for k, it in enumerate(stmt.items):
                name = it.name or (f"out{k}" if len(stmt.items) > 1 else "out")
                items.append((name, self.eval(it.value, env), it.span))
            return items
        if isinstance(stmt, ast.ParamDecl):
            env[stmt.name] = self.param_decl(stmt, env)
            return None
        if isinstance(stmt, ast.LayerScope):
            self.claim_scope(stmt.name, stmt.name, stmt.span)
            with self.in_scope(stmt.name):
                result = self.run_body(stmt.body, env, owner)
            if result is not None:
                raise ArchError("`return` inside a `layer` scope", stmt.span,
                                "return after the scope closes")
            return None
        if isinstance(stmt, ast.Repeat):
            count = self.eval(stmt.count, env)
            if isinstance(count, bool) or not isinstance(count, int):
                raise ArchError(f"repeat count must be a whole number, got {describe(count)}",
                                stmt.count.span)
            if count < 0:
                raise ArchError(f"repeat count must not be negative, got {count}",
                                stmt.count.span)
            if count > MAX_REPEAT:
                raise ArchError(f"repeat count {count:,} is too large (at most {MAX_REPEAT:,})",
                                stmt.count.span, "a real model has at most a few hundred layers")
            self.claim_scope(stmt.name, stmt.name, stmt.span)
            self.g.repeats.append(RepeatInfo(self.full(stmt.name), count, stmt.span))
            with self.in_scope(stmt.name):
                for i in range(count):
                    if len(self.g) > MAX_NODES:
                        raise ArchError(f"the model grows past {MAX_NODES:,} graph nodes "
                                        f"(at iteration {i} of this repeat)", stmt.span,
                                        "check the repeat counts; nested repeats multiply")
                    with self.in_scope(str(i)):
                        if self.run_body(stmt.body, env, owner) is not None:
                            raise ArchError("`return` inside `repeat`", stmt.span)
            return None
        raise ArchError(f"unsupported statement {type(stmt).__name__}", stmt.span)

    def param_decl(self, stmt: ast.ParamDecl, env: dict) -> Tensor:
        shape = None
        dtype = "float32"
        if stmt.type is not None:
            if not isinstance(stmt.type, ast.TensorType):
                raise ArchError("a parameter needs a tensor type", stmt.type.span,
                                f"e.g. `param {stmt.name}: float[4, 6]`")
            dtype = DTYPES[stmt.type.dtype]
            shape = tuple(self.eval_dim(d, env) for d in stmt.type.dims)
        init, std, value = "normal", 0.02, None
        v = stmt.value
        if isinstance(v, ast.Name) and v.id in ("ones", "zeros") and v.id not in env:
            init = v.id
        elif isinstance(v, ast.Call) and v.func == "normal" and "normal" not in self.prog.blocks:
            init = "normal"
            if len(v.args) != 1 or v.kwargs:
                raise ArchError("normal(std) takes one argument, the standard deviation", v.span)
            std = self.eval(v.args[0], env)
            if not isinstance(std, (int, float)) or std < 0:
                raise ArchError(f"normal(std) needs a non-negative number, got {describe(std)}",
                                v.args[0].span)
        elif v is not None:
            lit = self.eval(v, env)
            try:
                value = np.array(lit, dtype=dtype)
            except (ValueError, TypeError):
                raise ArchError("a parameter's value must be a (nested) list of numbers of "
                                "equal lengths", v.span) from None
            if value.dtype == object:
                raise ArchError("ragged literal: rows have different lengths", v.span)
            init = "value"
            if shape is not None and tuple(value.shape) != shape:
                raise ArchError(f"parameter `{stmt.name}` is declared {shape_str(shape)} but its "
                                f"value has shape {shape_str(value.shape)}", v.span,
                                notes=[f"declared at {stmt.type.span}"])
            shape = tuple(value.shape)
        if shape is None:
            raise ArchError(f"parameter `{stmt.name}` needs a type or a value", stmt.span,
                            f"e.g. `param {stmt.name}: float[4, 6]`")
        return self.param(stmt.name, shape, stmt.span, init=init, std=float(std), value=value,
                          dtype=dtype)

    # ----- expressions
    def lookup(self, name: str, env: dict, span: Span, const_only: bool = False):
        if name in env:
            _unpoisoned(env[name])
            return env[name]
        if name in self.consts:
            _unpoisoned(self.consts[name])
            return self.consts[name]
        known = list(env) + list(self.consts)
        if name in self.prog.blocks or name in LAYERS or name in OPS:
            raise ArchError(f"`{name}` is a {'layer' if name in LAYERS else 'block' if name in self.prog.blocks else 'op'}, "
                            f"not a value", span, f"call it: `{name}(...)`")
        what = "config constant" if const_only else "name"
        raise ArchError(f"unknown {what} `{name}`", span, did_you_mean(name, known))

    def eval_dim(self, expr, env: dict, symbolic: bool = False) -> DimLike:
        """A size in a type: an int expression; unknown names are symbols where allowed."""
        if symbolic and isinstance(expr, ast.Name) and expr.id not in env \
                and expr.id not in self.consts:
            # a new symbolic size; one spelled almost like a constant is far likelier a typo
            near = did_you_mean(expr.id, self.consts)
            if near and len(expr.id) > 2:
                raise ArchError(f"unknown size `{expr.id}`", expr.span,
                                f"{near} (to declare a new symbolic size, choose a name that "
                                "does not look like a config constant)")
            d = Dim.sym(expr.id)
            env[expr.id] = d
            return d
        v = self.eval(expr, env)
        if isinstance(v, bool) or not isinstance(v, (int, Dim)):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise ArchError(f"a dimension must be a whole number, got {describe(v)}", expr.span)
        if isinstance(v, int) and v < 0:
            raise ArchError(f"a dimension must not be negative, got {v}", expr.span)
        return v

    def eval(self, e, env: dict, const_only: bool = False):
        if isinstance(e, ast.Num):
            return bounded(e.value, e.span)
        if isinstance(e, (ast.Str, ast.Bool)):
            return e.value
        if isinstance(e, ast.NoneLit):
            return None
        if isinstance(e, ast.Name):
            return self.lookup(e.id, env, e.span, const_only)
        if isinstance(e, ast.ListLit):
            return [self.eval(x, env, const_only) for x in e.items]
        if isinstance(e, ast.Neg):
            v = self.eval(e.operand, env, const_only)
            _unpoisoned(v)
            if isinstance(v, Tensor):
                return self.emit("neg", [v], {}, e.span)
            if isinstance(v, Dim):
                return dim_neg(v)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v
            raise ArchError(f"cannot negate {describe(v)}", e.span)
        if isinstance(e, ast.BinOp):
            return self.binop(e, self.eval(e.left, env, const_only),
                              self.eval(e.right, env, const_only))
        if isinstance(e, ast.Call):
            if const_only and e.func not in SCALAR_FUNCS:
                raise ArchError(f"config constants are numbers; `{e.func}(...)` is not allowed "
                                "here", e.func_span)
            return self.call(e, env)
        if isinstance(e, ast.Index):
            return self.index(e, env)
        raise ArchError(f"unsupported expression {type(e).__name__}", e.span)

    def binop(self, e: ast.BinOp, a, b):
        _unpoisoned(a, b)
        op = e.op
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            if op == "**":
                if isinstance(b, (int, float)) and b == 2 and isinstance(a, Tensor):
                    return self.emit("square", [a], {}, e.span)
                raise ArchError("a tensor can only be raised to the power 2 (`x ** 2`)", e.span)
            if op == "//":
                raise ArchError("`//` is for sizes; tensors divide with `/`", e.span)
            name = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul"}[op]
            like = a if isinstance(a, Tensor) else b
            a_t = self.as_tensor(a, e.left.span, like)
            b_t = self.as_tensor(b, e.right.span, like)
            return self.emit(name, [a_t, b_t], {}, e.span)
        if op == "@":
            raise ArchError(f"`@` multiplies tensors; got {describe(a)} and {describe(b)}", e.span)
        if isinstance(a, Dim) or isinstance(b, Dim):
            return self.dim_op(e, a, b)
        for v, side in ((a, e.left), (b, e.right)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ArchError(f"`{op}` needs numbers or tensors, got {describe(v)}", side.span)
        return bounded(self.arith(e, op, a, b), e.span)

    @staticmethod
    def arith(e: ast.BinOp, op: str, a, b):
        if op in ("/", "//") and b == 0:
            raise ArchError("division by zero", e.span)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "//":
            return a // b
        if op == "**":
            # refuse before computing: 2 ** 10**10 would take minutes and gigabytes
            if isinstance(a, int) and isinstance(b, int) and abs(a) > 1 \
                    and b * math.log2(abs(a)) > 64:
                raise ArchError(f"number too large: {a} ** {b} exceeds {MAX_INT} (int64)",
                                e.span)
            if a == 0 and b < 0:
                raise ArchError("division by zero: 0 to a negative power", e.span)
            try:
                v = a ** b
            except OverflowError:
                raise ArchError("number too large", e.span) from None
            if isinstance(v, complex):
                raise ArchError(f"{a} ** {b} is not a real number", e.span)
            return v
        # `/` of two ints stays an int when exact, so `d_model / n_head` is a size
        if isinstance(a, int) and isinstance(b, int) and a % b == 0:
            return a // b
        return a / b

    def dim_op(self, e: ast.BinOp, a, b) -> DimLike:
        for v, side in ((a, e.left), (b, e.right)):
            if isinstance(v, bool) or not isinstance(v, (int, Dim)):
                raise ArchError(f"`{e.op}` on a symbolic size needs whole numbers, got "
                                f"{describe(v)}", side.span)
        if e.op == "+":
            return dim_add(a, b)
        if e.op == "-":
            return dim_sub(a, b)
        if e.op == "*":
            return bounded(dim_mul(a, b), e.span)
        if e.op in ("/", "//"):
            q = dim_div(a, b)
            if q is None:
                raise ArchError(f"{a} is not known to divide by {b}", e.span)
            return q
        raise ArchError(f"`{e.op}` is not defined on symbolic sizes", e.span)

    def as_tensor(self, v, span: Span, like: Tensor | None = None) -> Tensor:
        if isinstance(v, Tensor):
            return v
        if isinstance(v, bool):
            return self.const(v, span, "bool")
        if isinstance(v, (int, float)):
            dtype = "int64"
            if like is not None and like.dtype.startswith("float"):
                dtype = like.dtype
            elif isinstance(v, float):
                dtype = "float32"
            return self.const(v, span, dtype)
        if isinstance(v, list):
            try:
                arr = np.array(v)
            except ValueError:
                arr = None
            if arr is None or arr.dtype == object or arr.dtype.kind not in "biuf":
                raise ArchError("a list used as a tensor must hold numbers in equal-length rows",
                                span)
            if like is not None and like.dtype.startswith("float"):
                return self.const(arr, span, like.dtype)
            return self.const(arr, span, "float32" if arr.dtype.kind == "f" else None)
        raise ArchError(f"expected a tensor, got {describe(v)}", span)

    def index(self, e: ast.Index, env: dict):
        base = self.eval(e.value, env)
        _unpoisoned(base)
        if isinstance(base, (list, tuple)):
            if len(e.subs) != 1 or isinstance(e.subs[0], ast.SliceSub):
                raise ArchError("a list takes one index", e.span)
            i = self.eval(e.subs[0], env)
            if not isinstance(i, int) or not -len(base) <= i < len(base):
                raise ArchError(f"index {i} is out of range for {describe(base)}", e.subs[0].span)
            return base[i]
        if not isinstance(base, Tensor):
            raise ArchError(f"cannot index {describe(base)}", e.value.span)
        if len(e.subs) > len(base.shape):
            raise ArchError(f"{len(e.subs)} indices for a rank-{len(base.shape)} tensor",
                            e.span)
        axis = 0
        out = base
        for sub in e.subs:
            if isinstance(sub, ast.SliceSub):
                start = 0 if sub.start is None else self.eval(sub.start, env)
                stop = None if sub.stop is None else self.eval(sub.stop, env)
                if not (sub.start is None and sub.stop is None):
                    out = self.emit("slice", [out], {"axis": axis, "start": start, "stop": stop,
                                                     "step": 1}, sub.span)
                axis += 1
            else:
                i = self.eval(sub, env)
                if isinstance(i, bool) or not isinstance(i, int):
                    raise ArchError(f"a tensor index must be a whole number, got {describe(i)}",
                                    sub.span)
                out = self.emit("take", [out], {"index": i, "axis": axis}, sub.span)
        return out

    # ----- calls
    def call(self, e: ast.Call, env: dict):
        args = [self.eval(a, env) for a in e.args]
        kwargs = {}
        for kw in e.kwargs:
            if kw.name in kwargs:
                raise ArchError(f"argument `{kw.name}` given twice", kw.span)
            kwargs[kw.name] = (self.eval(kw.value, env), kw.span)
        _unpoisoned(*args, *(v for v, _ in kwargs.values()))
        if e.func in self.prog.blocks:
            return self.call_block(self.prog.blocks[e.func], e, args, kwargs)
        if e.func in LAYERS:
            return self.call_layer(e, args, kwargs)
        known_op = (e.func in OPS and e.func not in INTERNAL_OPS) or e.func in SCALAR_FUNCS
        if e.as_name is not None and known_op:
            raise ArchError(f"`as` names a layer or block call; `{e.func}` is a plain op with "
                            "no parameters", e.span)
        if e.func in OPS and e.func not in INTERNAL_OPS:
            # sqrt(2.0) is a number; sqrt(x) and sqrt([0.25, 0.25]) are tensors
            if all(not isinstance(a, (Tensor, list)) for a in args) and e.func in SCALAR_FUNCS \
                    and not kwargs:
                return self.scalar_call(e, args)
            return self.call_op(e, args, kwargs)
        if e.func in SCALAR_FUNCS:
            return self.scalar_call(e, args)
        named = list(self.prog.blocks) + list(LAYERS)
        known = named + [o for o in OPS if o not in INTERNAL_OPS] + list(SCALAR_FUNCS)
        # `Name(...) as x` can only be a layer or a block: suggest among those first
        hint = (did_you_mean(e.func, named) if e.as_name is not None else None) or \
            did_you_mean(e.func, known)
        raise ArchError(f"unknown {'layer or block' if e.as_name is not None else 'op or block'}"
                        f" `{e.func}`", e.func_span, hint)

    def scalar_call(self, e: ast.Call, args):
        for a, expr in zip(args, e.args):
            if isinstance(a, bool) or not isinstance(a, (int, float)):
                raise ArchError(f"{e.func}() of {describe(a)}: expected a number", expr.span)
        try:
            return SCALAR_FUNCS[e.func](*args)
        except (ValueError, TypeError, OverflowError) as err:
            raise ArchError(f"{e.func}(): {err}", e.span) from None

    def call_op(self, e: ast.Call, args: list, kwargs: dict):
        spec = OPS[e.func]
        tensor_names = [n.strip("*?") for n in spec.inputs]
        tensors: list = []
        attrs: dict = {}
        if spec.variadic:
            tensors = list(args)
        else:
            for i, a in enumerate(args):
                if i < len(tensor_names):
                    tensors.append(a)
                elif i - len(tensor_names) < len(spec.attrs):
                    attrs[list(spec.attrs)[i - len(tensor_names)]] = a
                else:
                    raise ArchError(f"{e.func}() takes at most "
                                    f"{_count(len(tensor_names) + len(spec.attrs), 'argument')}"
                                    f", got {len(args)}", e.args[i].span,
                                    self.signature_hint(spec))
        for k, (v, span) in kwargs.items():
            if k in tensor_names and not spec.variadic:
                idx = tensor_names.index(k)
                while len(tensors) <= idx:
                    tensors.append(None)
                if tensors[idx] is not None:
                    raise ArchError(f"argument `{k}` given twice", span)
                tensors[idx] = v
            elif k in spec.attrs:
                if k in attrs:
                    raise ArchError(f"argument `{k}` given twice", span)
                attrs[k] = v
            else:
                raise ArchError(f"{e.func}() has no argument `{k}`", span,
                                did_you_mean(k, tensor_names + list(spec.attrs))
                                or self.signature_hint(spec))
        while tensors and tensors[-1] is None:
            tensors.pop()
        if len(tensors) < spec.min_inputs or any(t is None for t in tensors):
            missing = [n for n, t in zip(tensor_names, tensors + [None] * 9) if t is None]
            raise ArchError(f"{e.func}() is missing argument `{missing[0]}`", e.span,
                            self.signature_hint(spec))
        for k, default in spec.attrs.items():
            if default is REQUIRED and k not in attrs:
                raise ArchError(f"{e.func}() is missing argument `{k}`", e.span,
                                self.signature_hint(spec))
        like = next((t for t in tensors if isinstance(t, Tensor)), None)
        spans = list(e.args) + [None] * len(tensors)
        tensor_vals = [self.as_tensor(t, (spans[i].span if spans[i] is not None else e.span), like)
                       for i, t in enumerate(tensors)]
        for k, v in attrs.items():
            if isinstance(v, Tensor):
                raise ArchError(f"{e.func}(): `{k}` must be known at compile time, not a tensor",
                                e.span)
        return self.emit(e.func, tensor_vals, attrs, e.span)

    @staticmethod
    def signature_hint(spec) -> str:
        parts = [n for n in spec.inputs] + [f"{k}={v!r}" if v is not REQUIRED else k
                                            for k, v in spec.attrs.items()]
        return f"usage: {spec.name}({', '.join(parts)})"

    def call_layer(self, e: ast.Call, args: list, kwargs: dict):
        layer = LAYERS[e.func]
        scope = self.claim_scope(e.as_name, layer.default_name, e.span)
        ctx = LayerContext(self, e)
        with self.in_scope(scope):
            return layer.call(ctx, args, {k: v for k, (v, _) in kwargs.items()},
                              {k: s for k, (_, s) in kwargs.items()})

    def call_block(self, block: ast.Block, e: ast.Call, args: list, kwargs: dict):
        if len(self.call_stack) >= MAX_CALL_DEPTH:
            raise ArchError(f"blocks call each other more than {MAX_CALL_DEPTH} deep", e.span,
                            "call chain: " + " -> ".join(self.call_stack[:5]) + " -> ...")
        if block.name in self.call_stack:
            raise ArchError(f"block `{block.name}` calls itself", e.span,
                            "use `repeat N as name { ... }` to stack layers")
        formals = {f.name: f for f in block.formals}
        if len(args) > len(block.formals):
            raise ArchError(f"{block.name}() takes {_count(len(block.formals), 'argument')}, "
                            f"got {len(args)}", e.args[len(block.formals)].span,
                            f"defined at {block.span}")
        bound: dict[str, Any] = {f.name: a for f, a in zip(block.formals, args)}
        for k, (v, span) in kwargs.items():
            if k not in formals:
                raise ArchError(f"{block.name}() has no argument `{k}`", span,
                                did_you_mean(k, formals) or f"defined at {block.span}")
            if k in bound:
                raise ArchError(f"argument `{k}` given twice", span)
            bound[k] = v
        env: dict[str, Any] = {}
        for f in block.formals:
            if f.name not in bound:
                if f.default is None:
                    raise ArchError(f"{block.name}() is missing argument `{f.name}`", e.span,
                                    f"defined at {f.span}")
                bound[f.name] = self.eval(f.default, {})
            self.check_formal(block, f, bound[f.name], env, e)
            env[f.name] = bound[f.name]
        self.call_stack.append(block.name)
        errors_before = len(self.errors)
        try:
            if e.as_name is not None:
                self.claim_scope(e.as_name, e.as_name, e.span)
                with self.in_scope(e.as_name):
                    result = self.run_body(block.body, env, block)
            else:
                result = self.run_body(block.body, env, block)
        finally:
            self.call_stack.pop()
        if len(self.errors) > errors_before:
            return POISON   # the block's errors are recorded; its result is unusable
        if result is None:
            return None
        values = tuple(v for _, v, _ in result)
        return values[0] if len(values) == 1 else values

    def check_formal(self, block: ast.Block, f: ast.Formal, value, env: dict,
                     e: ast.Call) -> None:
        """Unify an argument with its declared type; unknown size names bind to the actual."""
        if f.type is None:
            return
        if isinstance(f.type, ast.ScalarType):
            want = f.type.dtype
            ok = ((want == "int" and isinstance(value, (int, Dim)) and not isinstance(value, bool))
                  or (want == "float" and isinstance(value, (int, float))
                      and not isinstance(value, bool))
                  or (want == "bool" and isinstance(value, bool)))
            if not ok:
                raise ArchError(f"{block.name}(): argument `{f.name}` must be {want}, got "
                                f"{describe(value)}", e.span, notes=[f"declared at {f.span}"])
            return
        if not isinstance(value, Tensor):
            raise ArchError(f"{block.name}(): argument `{f.name}` must be a tensor, got "
                            f"{describe(value)}", e.span, notes=[f"declared at {f.span}"])
        want_dtype = DTYPES[f.type.dtype]
        if value.dtype != want_dtype or len(value.shape) != len(f.type.dims):
            raise ArchError(f"{block.name}(): argument `{f.name}` must be "
                            f"{f.type.dtype}[{len(f.type.dims)} dims], got {value.tt}",
                            e.span, notes=[f"declared at {f.type.span}"])
        for dexpr, actual in zip(f.type.dims, value.shape):
            if isinstance(dexpr, ast.Name) and dexpr.id not in env and dexpr.id not in self.consts:
                env[dexpr.id] = actual
                continue
            want = self.eval_dim(dexpr, env)
            if want != actual:
                raise ArchError(f"{block.name}(): argument `{f.name}` has shape "
                                f"{shape_str(value.shape)} but {shape_str(self._formal_shape(f, env))} "
                                f"is declared", e.span,
                                notes=[f"declared at {f.type.span}",
                                       f"the argument was made at {value.origin}"])

    def _formal_shape(self, f: ast.Formal, env: dict):
        out = []
        for d in f.type.dims:
            try:
                out.append(self.eval_dim(d, env))
            except ArchError:
                out.append(d.id if isinstance(d, ast.Name) else "?")
        return out


class LayerContext:
    """What a builtin layer macro (dsl/layers/) sees: params and ops in its own scope."""

    def __init__(self, lowerer: Lowerer, call: ast.Call):
        self._l = lowerer
        self.call = call
        self.span = call.span

    @property
    def consts(self) -> dict:
        return self._l.consts

    @property
    def scope(self) -> str:
        """The layer's full scope name, e.g. `layers.3.attn`."""
        return self._l.scope_name

    def param(self, name: str, shape, init: str = "normal", std: float = 0.02,
              dtype: str = "float32") -> Tensor:
        return self._l.param(name, tuple(shape), self.span, init=init, std=std, dtype=dtype)

    def op(self, name: str, *args, **attrs):
        like = next((a for a in args if isinstance(a, Tensor)), None)
        tensors = [self._l.as_tensor(a, self.span, like) for a in args]
        return self._l.emit(name, tensors, attrs, self.span)

    def const(self, value, dtype: str | None = None) -> Tensor:
        return self._l.const(value, self.span, dtype)

    @contextmanager
    def sub(self, name: str):
        """A nested scope inside the layer (`attn.q`), for grouping its params and ops."""
        with self._l.in_scope(name):
            yield

    def error(self, message: str, hint: str | None = None) -> ArchError:
        return ArchError(message, self.span, hint)

    def arg_span(self, name_or_index) -> Span:
        if isinstance(name_or_index, int) and name_or_index < len(self.call.args):
            return self.call.args[name_or_index].span
        for kw in self.call.kwargs:
            if kw.name == name_or_index:
                return kw.span
        return self.span


def lower(path: str | Path, model: str | None = None,
          config: dict[str, Any] | None = None) -> Graph:
    """Parse `path` (and its includes) and lower its model to the layer graph; `config`
    overrides config constants by name (`{"n_layer": 2}`)."""
    try:
        return _lower(path, model, config)
    except RecursionError:
        # the explicit bounds (nesting, calls, includes) should make this unreachable
        raise ArchError(f"{path} is nested too deeply for archc to process", None,
                        "split deep expressions and block chains into smaller steps") from None


def _lower(path, model, config) -> Graph:
    prog = load_program(path)
    if model is not None:
        found = [m for m in prog.models if m.name == model]
        if not found:
            raise ArchError(f"no model named `{model}` in {path}", None,
                            did_you_mean(model, [m.name for m in prog.models]))
        target = found[0]
    elif len(prog.models) == 1:
        target = prog.models[0]
    elif not prog.models:
        raise ArchError(f"{path} defines no model", Span(str(path), 1, 1),
                        "add `model name(x: float[T, d]) { ... return y }`")
    else:
        names = ", ".join(f"`{m.name}`" for m in prog.models)
        raise ArchError(f"{path} defines several models ({names})", prog.models[1].span,
                        "choose one with --model NAME")
    return Lowerer(prog, config).lower_model(target)
