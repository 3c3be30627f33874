"""Builtin layers: Capitalised calls that create parameters in their own scope and emit ops.

A layer is a Python function over a `LayerContext` (see dsl/lowering/calls.py), declared once:

    @layer("LayerNorm")
    def layer_norm(ctx, x, eps=1e-5, bias=True):
        w = ctx.param("weight", [x.shape[-1]], init="ones")
        ...
        return ctx.op("layernorm", x, w, b, eps=eps)

Arguments are bound like a Python call, so `LayerNorm(x, epsilon=1e-6)` is reported as an
unknown argument with a hint. Lowercase names are primitive ops (dsl/ops/), or functions
written in terms of them (`FUNCTIONS`, registered with `@function`: no parameters).
"""
from __future__ import annotations

import importlib
import pkgutil
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ArchError, did_you_mean


@dataclass(frozen=True)
class LayerDef:
    name: str
    fn: Callable[..., Any]
    default_name: str
    doc: str

    def params(self) -> list[str]:
        return list(inspect.signature(self.fn).parameters)[1:]

    def call(self, ctx, args: list, kwargs: dict, kw_spans: dict):
        sig = inspect.signature(self.fn)
        names = self.params()
        for k in kwargs:
            if k not in names:
                raise ArchError(f"{self.name}() has no argument `{k}`", kw_spans[k],
                                did_you_mean(k, names) or f"usage: {self.usage()}")
        try:
            bound = sig.bind(ctx, *args, **kwargs)
        except TypeError as e:
            msg = str(e).replace("'", "`")
            raise ArchError(f"{self.name}(): {msg}", ctx.span, f"usage: {self.usage()}") from None
        for i, (name, value) in enumerate(list(bound.arguments.items())[1:]):
            want = _type_mismatch(value, sig.parameters[name].default)
            if want:
                from ..values import describe
                span = kw_spans[name] if name in kw_spans else ctx.arg_span(i)
                raise ArchError(f"{self.name}(): `{name}` must be {want}, got {describe(value)}",
                                span, f"usage: {self.usage()}")
        return self.fn(*bound.args, **bound.kwargs)

    def usage(self) -> str:
        parts = []
        for p in list(inspect.signature(self.fn).parameters.values())[1:]:
            parts.append(p.name if p.default is inspect.Parameter.empty
                         else f"{p.name}={p.default!r}".replace("True", "true")
                         .replace("False", "false").replace("None", "none"))
        return f"{self.name}({', '.join(parts)})"


def _type_mismatch(value, default) -> str | None:
    """What an argument must be, judged by its default's type (bool, number, string), when
    `value` is not that; None when it fits or the default says nothing."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, (int, float)):
        from ..dims import Dim
        ok = isinstance(value, (int, float, Dim)) and not isinstance(value, bool)
        return None if ok else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None


LAYERS: dict[str, LayerDef] = {}


def layer(name: str, default_name: str | None = None):
    def register(fn):
        if name in LAYERS:
            raise RuntimeError(f"layer {name!r} registered twice")
        LAYERS[name] = LayerDef(name, fn, default_name or name.lower(),
                                (fn.__doc__ or "").strip())
        return fn
    return register


# Functions: lowercase calls written in terms of ops, bound like layers but with no
# parameters, no scope and no `as` (dsl/layers/functions.py: `mean`, `sum`, `ones_like`)
FUNCTIONS: dict[str, LayerDef] = {}


def function(name: str):
    def register(fn):
        if name in FUNCTIONS:
            raise RuntimeError(f"function {name!r} registered twice")
        FUNCTIONS[name] = LayerDef(name, fn, name, (fn.__doc__ or "").strip())
        return fn
    return register


# every file in this package is a layer family: adding one is adding a file
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
