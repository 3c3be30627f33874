"""Normalisations over the last axis, and softmax."""
from __future__ import annotations

from ..dims import shape_str
from . import TT, is_float, ShapeError, norm_axis, op, scaled_flops


def _check_affine(x: TT, p: TT | None, what: str, arg: int) -> None:
    if p is not None and tuple(p.shape) != (x.shape[-1],):
        raise ShapeError(f"{what} must have shape [{x.shape[-1]}] (the last dimension of "
                         f"the input {shape_str(x.shape)}), got {shape_str(p.shape)}", arg=arg)


ROWWISE = {"norm": True, "contiguous_rows": True, "per_position": (0,)}


@op("layernorm", inputs=("x", "weight", "bias?"), attrs={"eps": 1e-5}, flops=scaled_flops(8),
    traits=ROWWISE)
def layernorm(x: TT, w: TT, b: TT | None = None, eps: float = 1e-5) -> TT:
    """layernorm(x, weight, bias?, eps): (x - mean) / sqrt(var + eps) * weight + bias"""
    if not is_float(x.dtype) or not x.shape:
        raise ShapeError(f"layernorm needs a float tensor of rank >= 1, got {x}", arg=0)
    _check_affine(x, w, "layernorm weight", 1)
    _check_affine(x, b, "layernorm bias", 2)
    return x


@op("rmsnorm", inputs=("x", "weight"), attrs={"eps": 1e-6}, flops=scaled_flops(5),
    traits=ROWWISE)
def rmsnorm(x: TT, w: TT, eps: float = 1e-6) -> TT:
    """rmsnorm(x, weight, eps): x / sqrt(mean(x^2) + eps) * weight"""
    if not is_float(x.dtype) or not x.shape:
        raise ShapeError(f"rmsnorm needs a float tensor of rank >= 1, got {x}", arg=0)
    _check_affine(x, w, "rmsnorm weight", 1)
    return x


@op("softmax", inputs=("x",), attrs={"axis": -1}, flops=scaled_flops(5), traits=ROWWISE)
def softmax(x: TT, axis: int = -1) -> TT:
    """softmax(x, axis=-1), computed stably (max subtracted)"""
    if not is_float(x.dtype):
        raise ShapeError(f"softmax needs a float tensor, got {x}", arg=0)
    norm_axis(axis, len(x.shape))
    return x
