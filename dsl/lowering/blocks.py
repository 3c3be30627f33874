"""Block calls: arguments bound like a Python call, each checked against its declared type
(unknown size names in a tensor type bind to the argument's sizes), then the body lowered
inline, in a scope of its own when the call is named with `as`.
"""
from __future__ import annotations

from typing import Any

from .. import ast
from ..dims import Dim, shape_str
from ..errors import ArchError, did_you_mean
from ..values import MAX_CALL_DEPTH, Tensor, _count, describe
from .builder import DTYPES, POISON
from .expressions import Expressions


class Blocks(Expressions):
    """Calling a user's block; its body is run by the `Statements` half (`self.run_body`)."""

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
