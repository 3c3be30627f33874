"""Data movement: views where possible (reshape, transpose, slice, take, split, getitem),
copies where not (concat, stack)."""
from __future__ import annotations

import numpy as np

from ...dsl.errors import ArchError
from . import steps_for, view_as

@steps_for("reshape")
def build_reshape(P, node, args, attrs):
    x = args[0]
    shape = P.shape(node)
    v = view_as(x, shape) if P.planned_view(node) else None
    if v is not None:
        return v
    out = P.output()
    P.step(np.copyto, out.reshape(x.shape), x)
    return out


@steps_for("transpose")
def build_transpose(P, node, args, attrs):
    x = args[0]
    perm = attrs.get("perm")
    return np.swapaxes(x, -1, -2) if perm is None else np.transpose(x, tuple(perm))


@steps_for("slice")
def build_slice(P, node, args, attrs):
    x = args[0]
    ax = attrs.get("axis", 0) % x.ndim
    idx = [slice(None)] * x.ndim
    idx[ax] = slice(attrs.get("start", 0), attrs.get("stop"), attrs.get("step", 1))
    out = x[tuple(idx)]
    want = P.shape(node)
    if out.shape != want:
        # a symbolic size bound too small for the slice (x[:, 1:3] or x[:, -2:] with T = 1)
        raise ArchError(f"slice {idx[ax].start}:{'' if idx[ax].stop is None else idx[ax].stop}"
                        f" of an axis of size {x.shape[ax]} has {out.shape[ax]} positions; "
                        f"the model's shapes say {want[ax]}", node.span,
                        hint="give inputs long enough for this slice")
    return out


@steps_for("take")
def build_take(P, node, args, attrs):
    x = args[0]
    idx: list = [slice(None)] * x.ndim
    idx[attrs.get("axis", 0)] = attrs.get("index", 0)
    return x[tuple(idx)]


@steps_for("split")
def build_split(P, node, args, attrs):
    x = args[0]
    ax = attrs.get("axis", -1) % x.ndim
    sections = attrs.get("sections", 2)
    n = x.shape[ax]
    sizes = [n // sections] * sections if isinstance(sections, int) else list(sections)
    parts, start = [], 0
    for s in sizes:
        idx = [slice(None)] * x.ndim
        idx[ax] = slice(start, start + s)
        parts.append(x[tuple(idx)])
        start += s
    return tuple(parts)


@steps_for("getitem")
def build_getitem(P, node, args, attrs):
    return args[0][attrs.get("index", 0)]


@steps_for("concat")
def build_concat(P, node, args, attrs):
    out = P.output()
    P.step(_concat, tuple(args), out, attrs.get("axis", -1))
    return out


def _concat(xs, out, axis):
    np.concatenate(xs, axis=axis, out=out)

@steps_for("stack")
def build_stack(P, node, args, attrs):
    out = P.output()
    P.step(_stack, tuple(args), out, attrs.get("axis", 0))
    return out


def _stack(xs, out, axis):
    np.stack(xs, axis=axis, out=out)
