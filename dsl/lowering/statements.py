"""Statements: assignments, `return`, `param` declarations, `layer NAME { }` scopes and
`repeat N as NAME { }` stacks. A failing statement is recorded and the names it defines
are poisoned, so lowering goes on and reports every independent error at once.
"""
from __future__ import annotations

import numpy as np

from .. import ast
from ..dims import shape_str
from ..errors import ArchError
from ..graph import RepeatInfo
from ..values import MAX_REPEAT, Tensor, describe
from .builder import DTYPES, POISON, defined_names
from .calls import Calls


class Statements(Calls):
    """Running a body of statements in an environment of names."""

    def run_body(self, body, env: dict, owner: ast.Block):
        for i, stmt in enumerate(body):
            try:
                result = self.exec(stmt, env, owner)
            except ArchError as e:
                self.record(e)
                for name in defined_names(stmt):
                    env[name] = POISON
                if isinstance(stmt, ast.Return):
                    return [(None, POISON, stmt.span)]
                continue
            if result is not None:
                # an `if` whose chosen branch returns ends the body there
                if i != len(body) - 1 and not isinstance(stmt, ast.If):
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
            # iterations run the same statements on the same values, so all add as many
            # nodes, unless the body changes a number or list it reads (`n = n * 2`)
            uniform = all(env.get(n) is None or isinstance(env.get(n), Tensor)
                          for n in defined_names(stmt))
            outer = self.repeat_factor
            self.repeat_factor = outer * count if uniform else 1
            try:
                with self.in_scope(stmt.name):
                    for i in range(count):
                        self.check_growth(stmt.span, f" (at iteration {i} of this repeat)",
                                          "check the repeat counts; nested repeats multiply")
                        before = len(self.g)
                        with self.in_scope(str(i)):
                            if self.run_body(stmt.body, env, owner) is not None:
                                raise ArchError("`return` inside `repeat`", stmt.span)
                        if i == 0 and uniform:
                            self.project_growth(len(self.g) - before, count, outer, stmt.span)
            finally:
                self.repeat_factor = outer
            return None
        if isinstance(stmt, ast.If):
            # chosen now, by config values: the graph holds only the branch taken
            taken = self.truth(stmt.cond, self.eval(stmt.cond, env), "if")
            return self.run_body(stmt.body if taken else stmt.orelse, env, owner)
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
