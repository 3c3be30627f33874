"""Norm steps: layernorm, rmsnorm, softmax, and the fused residual + norm (row-wise
kernels over (rows, C) views, rows cut across the lanes)."""
from __future__ import annotations

from ..kernels import norm as k_norm
from . import Fallback, fallback, rows, steps_for, zeros

def _row_step(P, kernel, row_args: tuple, rest: tuple) -> None:
    """kernel(*row_args, *rest), the (rows, C) arrays of row_args cut into row ranges
    across the lanes (one plain step without lanes, or for a small tensor)."""
    n, c = row_args[0].shape
    P.lane_step([[(kernel, tuple(a[r0:r1] for a in row_args) + rest)]
                 for r0, r1 in P.row_lanes(n, n * c)])


def _compiles(x, w) -> bool:
    return x.dtype.kind == "f" and x.ndim >= 1 and x.dtype == w.dtype


def _affine(P, node, x, w, b=None):
    if not _compiles(x, w):
        return fallback("compiled for float x and weights of one dtype")
    c = x.shape[-1]
    return (rows(P.contiguous(x)), w,
            b if b is not None else zeros(c, x.dtype))


@steps_for("layernorm")
def build_layernorm(P, node, args, attrs):
    got = _affine(P, node, *args[:3])
    if isinstance(got, Fallback):
        return got
    x2, w, b = got
    out = P.output()
    _row_step(P, k_norm.layernorm, (rows(out), x2), (w, b, float(attrs["eps"])))
    return out


@steps_for("rmsnorm")
def build_rmsnorm(P, node, args, attrs):
    got = _affine(P, node, args[0], args[1])
    if isinstance(got, Fallback):
        return got
    x2, w, _ = got
    out = P.output()
    _row_step(P, k_norm.rmsnorm, (rows(out), x2), (w, float(attrs["eps"])))
    return out


@steps_for("add_layernorm", "add_rmsnorm")
def build_add_norm(P, node, args, attrs):
    x, r, w = args[:3]
    if x.shape != r.shape or not _compiles(x, w):
        return fallback("compiled for x and residual of one shape, float weights of x's dtype")
    x2, r2 = rows(P.contiguous(x, "x")), rows(P.contiguous(r, "r"))
    s, y = P.output(0), P.output(1)
    if node.op == "add_layernorm":
        b = args[3] if len(args) > 3 else zeros(x.shape[-1], x.dtype)
        _row_step(P, k_norm.add_layernorm, (rows(s), rows(y), x2, r2),
                  (w, b, float(attrs["eps"])))
    else:
        _row_step(P, k_norm.add_rmsnorm, (rows(s), rows(y), x2, r2), (w, float(attrs["eps"])))
    return (s, y)


@steps_for("softmax")
def build_softmax(P, node, args, attrs):
    x = args[0]
    if attrs.get("axis", -1) % max(x.ndim, 1) != x.ndim - 1 or x.dtype.kind != "f":
        return fallback("compiled for a float x over its last axis")
    out = P.output()
    P.step(k_norm.softmax, rows(out), rows(P.contiguous(x)))
    return out
