"""Longformer attention: a symmetric sliding window plus global tokens.

    longformer_attention(q, k, v, qg, kg, vg, global_mask, mask?)
        q, k, v     (B, T, H*D)  the local projections
        qg, kg, vg  (B, T, H*D)  the global projections (query_global, key_global, ...)
        global_mask (B, T)       true/1 at global tokens
        mask        (B, T)       true/1 at real (not padding) tokens
    -> (B, T, H*D)

A local token i attends, with q/k/v, to keys j with |i - j| <= window/2 and to every
global token (each key once). A global token i attends to all keys with qg/kg/vg. As in HF
`LongformerSelfAttention`, `window` is the total window (`attention_window`, even), and
scores are scaled by `scale` (1/sqrt(D) unless given). HF pads T to a multiple of the
window with masked tokens; masked keys never change a real token's output, so this op
needs no padding.
"""
from __future__ import annotations

from ..dims import DimLike, dim_add, dim_div, dim_mul, numel, shape_str
from ..scratch import copy_unless_viewable
from . import TT, ShapeError, is_float, op


def _flops(out: TT, q: TT, *_rest, window=2, **_a) -> DimLike:
    # every token: QK and PV over window+1 keys (global tokens not counted)
    return dim_mul(4 * (window + 1), numel(out.shape))


def _scratch(node, args, cache):
    # bool global/padding masks, the global keys per row, float64 scores per (b, h), and
    # copies of projections that do not view as heads
    q = args[0]
    B, T, C = q.shape
    H = node.attrs.get("heads", 1)
    out = [("glob", (B, T), "bool"), ("gidx", (B, T), "int64"), ("gcount", (B,), "int64"),
           ("scores", (B * H, T), "float64"), ("acc", (B * H, C // H), "float64")]
    if len(args) > 7:
        out.append(("real", (B, T), "bool"))
    for tag, a in zip(("q", "k", "v", "qg", "kg", "vg"), args[:6]):
        out += copy_unless_viewable(tag, a)
    return out


@op("longformer_attention", inputs=("q", "k", "v", "qg", "kg", "vg", "global_mask", "mask?"),
    attrs={"heads": 1, "window": 2, "scale": None}, flops=_flops,
    traits=("attention", "composite", "mixes_positions"),
    scratch=_scratch)
def longformer_attention(q: TT, k: TT, v: TT, qg: TT, kg: TT, vg: TT, global_mask: TT,
                         mask: TT | None = None, heads: int = 1, window: int = 2,
                         scale: float | None = None) -> TT:
    """longformer_attention(q, k, v, qg, kg, vg, global_mask, mask?, heads, window, scale):
    sliding window of total width `window` (|i-j| <= window/2) plus global tokens with
    their own projections; all tensors (B, T, heads*D), masks (B, T)"""
    if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
        raise ShapeError(f"longformer_attention: heads must be a positive whole number, "
                         f"got {heads!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0 or window % 2:
        raise ShapeError(f"longformer_attention: window is the total attention window and "
                         f"must be a positive even number, got {window!r}",
                         hint="HF `attention_window`; each side sees window/2 tokens")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise ShapeError(f"longformer_attention: scale must be a number or none, got {scale!r}")
    names = ("q", "k", "v", "qg", "kg", "vg")
    for i, (t, what) in enumerate(zip((q, k, v, qg, kg, vg), names)):
        if len(t.shape) != 3 or not is_float(t.dtype):
            raise ShapeError(f"longformer_attention: {what} must be a float (B, T, heads*D) "
                             f"tensor, got {t}", arg=i)
        if tuple(t.shape) != tuple(q.shape):
            raise ShapeError(f"longformer_attention: {what} {shape_str(t.shape)} must have the "
                             f"shape of q {shape_str(q.shape)}", arg=i)
    if dim_div(q.shape[-1], heads) is None:
        raise ShapeError(f"longformer_attention: {q.shape[-1]} features do not divide into "
                         f"heads={heads}", arg=0)
    for i, m in ((6, global_mask), (7, mask)):
        if m is not None and (m.dtype not in ("bool", "int64") or
                              tuple(m.shape) != tuple(q.shape[:2])):
            what = "global_mask" if i == 6 else "mask"
            raise ShapeError(f"longformer_attention: {what} must be bool or int of shape {shape_str(q.shape[:2])} (batch, "
                             f"tokens), got {m}", arg=i)
    return q
