"""Calls: `f(...)` is a block (dsl/lowering/blocks.py), a builtin layer (dsl/layers/, run
over a `LayerContext` in its own scope), a primitive op (dsl/ops/, arguments bound to its
declared inputs and attributes) or a scalar function of numbers (`sqrt(2.0)`).
"""
from __future__ import annotations

from contextlib import contextmanager

from .. import ast
from ..errors import ArchError, Span, did_you_mean
from ..layers import FUNCTIONS, LAYERS
from ..ops import OPS, REQUIRED
from ..values import Tensor, _count, describe
from .blocks import Blocks
from .builder import unpoisoned
from .expressions import SCALAR_FUNCS

INTERNAL_OPS = {"getitem"}


class Calls(Blocks):
    """Dispatching a call to what its name is, and binding its arguments."""

    def call(self, e: ast.Call, env: dict):
        args = [self.eval(a, env) for a in e.args]
        kwargs = {}
        for kw in e.kwargs:
            if kw.name in kwargs:
                raise ArchError(f"argument `{kw.name}` given twice", kw.span)
            kwargs[kw.name] = (self.eval(kw.value, env), kw.span)
        unpoisoned(*args, *(v for v, _ in kwargs.values()))
        if e.func in self.prog.blocks:
            return self.call_block(self.prog.blocks[e.func], e, args, kwargs)
        if e.func in LAYERS:
            return self.call_layer(e, args, kwargs)
        if e.func in FUNCTIONS:
            if e.as_name is not None:
                raise ArchError(f"`as` names a layer or block call; `{e.func}` is a function "
                                "with no parameters", e.span)
            return FUNCTIONS[e.func].call(LayerContext(self, e),
                                          args, {k: v for k, (v, _) in kwargs.items()},
                                          {k: s for k, (_, s) in kwargs.items()})
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
        known = named + [o for o in OPS if o not in INTERNAL_OPS] + list(SCALAR_FUNCS) + \
            list(FUNCTIONS)
        # `Name(...) as x` can only be a layer or a block: suggest among those first
        hint = (did_you_mean(e.func, named) if e.as_name is not None else None) or \
            did_you_mean(e.func, known)
        if hint and e.as_name is not None and not did_you_mean(e.func, named):
            hint += f" (it has no parameters: drop `as {e.as_name}`)"
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


    def call_layer(self, e: ast.Call, args: list, kwargs: dict):
        layer = LAYERS[e.func]
        scope = self.claim_scope(e.as_name, layer.default_name, e.span)
        ctx = LayerContext(self, e)
        with self.in_scope(scope):
            return layer.call(ctx, args, {k: v for k, (v, _) in kwargs.items()},
                              {k: s for k, (_, s) in kwargs.items()})


class LayerContext:
    """What a builtin layer macro (dsl/layers/) sees: params and ops in its own scope."""

    def __init__(self, lowerer: Calls, call: ast.Call):
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
