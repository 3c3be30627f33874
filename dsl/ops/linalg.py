"""Matrix products: matmul (NumPy semantics) and linear (x @ W + b, W stored (in, out))."""
from __future__ import annotations

from ..dims import dim_add, dim_mul, numel, shape_str
from ..scratch import copy_unless_contiguous
from . import TT, is_float, ShapeError, broadcast, op, promote


def _matmul_flops(out: TT, a: TT, b: TT, *rest, **_attrs) -> object:
    return dim_mul(2, dim_mul(numel(out.shape), a.shape[-1]))


@op("matmul", inputs=("a", "b"), attrs={"transpose_b": False}, flops=_matmul_flops,
    traits={"matmul": True, "per_position": (0,)})
def matmul(a: TT, b: TT, transpose_b: bool = False) -> TT:
    """matmul(a, b, transpose_b=false) = a @ b, batched over leading dims with broadcasting;
    transpose_b=true reads b with its last two axes swapped (a @ b^T, no transpose node)"""
    if len(a.shape) < 1 or len(b.shape) < 1:
        raise ShapeError("matmul needs operands of rank >= 1")
    if transpose_b:
        if len(b.shape) < 2:
            raise ShapeError(f"matmul: transpose_b needs b of rank >= 2, got {b}", arg=1)
        b = TT(tuple(b.shape[:-2]) + (b.shape[-1], b.shape[-2]), b.dtype)
    if not is_float(a.dtype) or not is_float(b.dtype):
        raise ShapeError(f"matmul needs float operands, got {a} @ {b}",
                         arg=0 if not is_float(a.dtype) else 1)
    a_s = a.shape if len(a.shape) > 1 else (1,) + a.shape
    b_s = b.shape if len(b.shape) > 1 else b.shape + (1,)
    if a_s[-1] != b_s[-2]:
        raise ShapeError(
            f"matmul: inner dimensions differ: {shape_str(a.shape)} @ {shape_str(b.shape)} "
            f"({a_s[-1]} vs {b_s[-2]})", arg=1)
    batch = broadcast(a_s[:-2], b_s[:-2])
    out = batch + (a_s[-2], b_s[-1])
    if len(a.shape) == 1:
        out = out[:-2] + out[-1:]
    if len(b.shape) == 1:
        out = out[:-1]
    return TT(tuple(out), promote(a.dtype, b.dtype))


def _linear_flops(out: TT, x: TT, w: TT, *bias) -> object:
    macs = dim_mul(2, dim_mul(numel(out.shape), w.shape[0]))
    return dim_add(macs, numel(out.shape)) if bias else macs


def product_scratch(node, args, cache):
    """A matrix product with a weight (linear, linear_act): BLAS and gemm_nt read x as
    contiguous (rows, in)."""
    return copy_unless_contiguous("x", args[0])


@op("linear", inputs=("x", "weight", "bias?"), flops=_linear_flops,
    traits={"matmul": True, "per_position": (0,), "weight_args": (1,), "keeps_tokens": True},
    scratch=product_scratch)
def linear(x: TT, w: TT, b: TT | None = None) -> TT:
    """linear(x, weight, bias?) = x @ weight + bias, weight of shape (in, out)"""
    if len(w.shape) != 2:
        raise ShapeError(f"linear: weight must be 2-D (in, out), got {shape_str(w.shape)}", arg=1)
    if not x.shape or x.shape[-1] != w.shape[0]:
        raise ShapeError(
            f"linear: input has {x.shape[-1] if x.shape else 'no'} features but weight "
            f"{shape_str(w.shape)} expects {w.shape[0]}", arg=1)
    if b is not None and tuple(b.shape) != (w.shape[1],):
        raise ShapeError(f"linear: bias must have shape [{w.shape[1]}], got {shape_str(b.shape)}",
                         arg=2)
    return TT(tuple(x.shape[:-1]) + (w.shape[1],), promote(x.dtype, w.dtype))
