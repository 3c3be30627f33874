"""Expressions: names, numbers and sizes are evaluated now; tensor arithmetic and indexing
become graph nodes. Config arithmetic is exact (`d_model / n_head` stays a whole size) and
bounded to int64; arithmetic on symbolic sizes (`T + 1`) stays symbolic.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ast
from ..dims import Dim, DimLike, dim_add, dim_div, dim_mul, dim_neg, dim_sub
from ..errors import ArchError, Span, did_you_mean
from ..layers import LAYERS
from ..ops import OPS
from ..values import MAX_INT, Tensor, bounded, describe, same_value
from .builder import GraphBuilder, unpoisoned

SCALAR_FUNCS = {"sqrt": math.sqrt, "exp": math.exp, "tanh": math.tanh, "log": math.log,
                "min": min, "max": max, "int": int, "float": float, "abs": abs}


class Expressions(GraphBuilder):
    """Evaluating expressions; calls are the `Calls` half's (`self.call`)."""

    def lookup(self, name: str, env: dict, span: Span, const_only: bool = False):
        if name in env:
            unpoisoned(env[name])
            return env[name]
        if name in self.consts:
            unpoisoned(self.consts[name])
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
            unpoisoned(v)
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
        if isinstance(e, ast.Compare):
            return self.compare(e, self.eval(e.left, env, const_only),
                                self.eval(e.right, env, const_only))
        if isinstance(e, ast.Logic):
            # short-circuit, as in Python: `has_head and head_size > 0`
            left = self.truth(e.left, self.eval(e.left, env, const_only), e.op)
            if left == (e.op == "or"):
                return left
            return self.truth(e.right, self.eval(e.right, env, const_only), e.op)
        if isinstance(e, ast.Not):
            return not self.truth(e.operand, self.eval(e.operand, env, const_only), "not")
        raise ArchError(f"unsupported expression {type(e).__name__}", e.span)

    @staticmethod
    def truth(e, v, what: str) -> bool:
        """`v` as a condition: only true or false (a tensor is not known until run time)."""
        unpoisoned(v)
        if isinstance(v, bool):
            return v
        hint = ("conditions choose the graph while lowering, so they are on config "
                "constants, never tensors" if isinstance(v, Tensor) else
                "compare it to get true or false, e.g. `x == none` or `n > 0`")
        raise ArchError(f"`{what}` needs true or false, got {describe(v)}", e.span, hint)

    def compare(self, e: ast.Compare, a, b) -> bool:
        unpoisoned(a, b)
        for v, side in ((a, e.left), (b, e.right)):
            if isinstance(v, Tensor):
                raise ArchError(f"`{e.op}` compares values known while lowering, got "
                                f"{describe(v)}", side.span,
                                "conditions choose the graph, so they are on config constants")
            if isinstance(v, Dim):
                raise ArchError(f"`{e.op}` cannot compare {describe(v)}: a symbolic size is "
                                "known only at run time", side.span)
        if e.op == "==":
            return same_value(a, b)
        if e.op == "!=":
            return not same_value(a, b)
        for v, side in ((a, e.left), (b, e.right)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ArchError(f"`{e.op}` orders numbers, got {describe(v)}", side.span)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[e.op]

    def binop(self, e: ast.BinOp, a, b):
        unpoisoned(a, b)
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
        unpoisoned(base)
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
