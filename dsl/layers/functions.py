"""Functions written in terms of ops: no parameters, no scope, no kernel of their own.

`sum` and `mean` reduce one axis, optionally over the positions a mask keeps; that is a
matmul with the mask's 0/1 weights, so every executor runs them as it is:

    x (B, T, C), mask (B, T)  ->  w = [mask != 0] as (B, 1, T)
    sum  = w @ x                                  # (B, 1, C) -> (B, C)
    mean = (w @ x) / (w @ w^T + 1e-9)             # a row with no kept position gives 0

(sentence-transformers' mean pooling: sum(x * mask) / max(sum(mask), 1e-9)).
"""
from __future__ import annotations

from ..dims import numel, shape_str
from . import function
from .basic import _tensor

EMPTY_ROW = 1e-9      # added to a mean's count: a row whose mask keeps nothing gives 0


def _axis(ctx, axis, rank: int, what: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
        raise ctx.error(f"{what}: `axis` must be a whole number in [{-rank}, {rank - 1}] for "
                        f"a rank-{rank} tensor, got {axis!r}")
    return axis % rank


def _ones(ctx, x, axis: int, dtype: str):
    """Ones along one axis of `x`, (x.shape[axis],): its positions from 1, made nonzero."""
    keep = ctx.op("cast", ctx.op("positions", x, axis=axis, offset=1), dtype="bool")
    return ctx.op("cast", keep, dtype=dtype)


def _reduce(ctx, what: str, x, axis, mask, keepdims: bool, mean: bool):
    x = _tensor(ctx, x, what)
    if not x.dtype.startswith("float"):
        raise ctx.error(f"{what}: needs a float tensor, got {x.tt}",
                        "cast it first: cast(x, \"float32\")")
    ax = _axis(ctx, axis, len(x.shape), what)
    pre, n, rest = tuple(x.shape[:ax]), x.shape[ax], tuple(x.shape[ax + 1:])
    width = numel(rest) if rest else 1
    x3 = ctx.op("reshape", x, shape=list(pre + (n, width)))             # (..., n, R)
    if mask is None:
        w = ctx.op("reshape", _ones(ctx, x, ax, x.dtype), shape=[1, n])  # (1, n)
    else:
        mask = _tensor(ctx, mask, f"{what}: `mask`")
        if tuple(mask.shape) != pre + (n,):
            raise ctx.error(f"{what}: `mask` must have the shape of x up to the axis, "
                            f"{shape_str(pre + (n,))}, got {mask.tt}")
        keep = ctx.op("cast", ctx.op("cast", mask, dtype="bool"), dtype=x.dtype)
        w = ctx.op("reshape", keep, shape=list(pre + (1, n)))            # (..., 1, n)
    out = ctx.op("matmul", w, x3)                                       # (..., 1, R)
    if mean:
        count = ctx.op("matmul", w, w, transpose_b=True)                # (..., 1, 1)
        out = ctx.op("div", out, ctx.op("add", count, ctx.const(EMPTY_ROW, x.dtype)))
    return ctx.op("reshape", out, shape=list(pre + ((1,) if keepdims else ()) + rest))


@function("sum")
def sum_(ctx, x, axis=-1, mask=None, keepdims=False):
    """sum(x, axis=-1, mask=none, keepdims=false): the sum over one axis; with `mask`
    (shaped like x up to the axis), only where mask is nonzero"""
    return _reduce(ctx, "sum", x, axis, mask, keepdims, mean=False)


@function("mean")
def mean(ctx, x, axis=-1, mask=None, keepdims=False):
    """mean(x, axis=-1, mask=none, keepdims=false): the mean over one axis; with `mask`
    (shaped like x up to the axis: ids' padding mask for (B, T, C) states), the mean over
    the kept positions only (a row keeping none gives 0): sentence-embedding pooling"""
    return _reduce(ctx, "mean", x, axis, mask, keepdims, mean=True)


@function("ones_like")
def ones_like(ctx, x, dtype=""):
    """ones_like(x, dtype=x's): a tensor of ones shaped like x"""
    x = _tensor(ctx, x, "ones_like")
    dtype = dtype or x.dtype
    if dtype not in ("float32", "float64", "int64"):
        raise ctx.error(f"ones_like: dtype must be float32, float64 or int64, got {dtype!r}")
    out = None
    for ax in range(len(x.shape)):   # the outer product of ones along every axis
        v = ctx.op("reshape", _ones(ctx, x, ax, dtype),
                   shape=[1] * ax + [x.shape[ax]] + [1] * (len(x.shape) - ax - 1))
        out = v if out is None else ctx.op("mul", out, v)
    if out is None:
        raise ctx.error("ones_like: x must have at least one axis")
    return out
