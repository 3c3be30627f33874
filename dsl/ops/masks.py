"""Additive score masks: the primitive form of attention's causal/window and padding masks.

    attention_mask(q, k, causal, window)   -> (T, S)        0 where query i may see key j,
                                                             -inf where it may not
    padding_mask(mask)                     -> (..., 1, 1, S) 0 where mask != 0, else -inf

Both are added to attention scores (..., H, T, S) before the softmax; they are what the
lower_layers pass turns the `attention` op's causal/window attributes and (B, S) mask into,
and what fuse_attention reads back. Positions follow the attention op: with T queries and
S keys, query i sits at absolute position S - T + i (decoding with a cache), so the causal
mask is `j <= S - T + i`; a window W keeps `i - W < j` (and `j < i + W` when not causal).
"""
from __future__ import annotations

from . import TT, ShapeError, is_float, op


@op("attention_mask", inputs=("q", "k"), attrs={"causal": False, "window": None},
    traits=("mask",))
def attention_mask(q: TT, k: TT, causal: bool = False, window: int | None = None) -> TT:
    """attention_mask(q, k, causal=false, window=none): additive (T, S) mask, 0 where query
    i (at position S - T + i) may see key j, -inf elsewhere; T = q.shape[-2], S = k.shape[-2],
    so q and k may be (B, T, C) or per-head (B, H, T, D)"""
    for i, (t, what) in enumerate(((q, "q"), (k, "k"))):
        if len(t.shape) < 2:
            raise ShapeError(f"attention_mask: {what} must have rank >= 2 (..., length, "
                             f"features), got {t}", arg=i)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window <= 0):
        raise ShapeError(f"attention_mask: window must be a positive whole number or none, "
                         f"got {window!r}")
    return TT((q.shape[-2], k.shape[-2]), q.dtype if is_float(q.dtype) else "float32")


@op("padding_mask", inputs=("mask",), attrs={"dtype": "float32"}, traits=("mask",),
    # which keys are real, as bool
    scratch=lambda node, args, cache: [("ok", args[0].shape, "bool")])
def padding_mask(mask: TT, dtype: str = "float32") -> TT:
    """padding_mask(mask, dtype="float32"): additive scores mask (..., 1, 1, S) from a
    (..., S) bool/int key mask: 0 where mask is true/non-zero, -inf where it is 0"""
    if mask.dtype not in ("bool", "int64") or not mask.shape:
        raise ShapeError(f"padding_mask: mask must be bool or int of shape (batch, keys), "
                         f"got {mask}", arg=0)
    if dtype not in ("float32", "float64"):
        raise ShapeError(f"padding_mask: dtype must be float32 or float64, got {dtype!r}")
    shape = tuple(mask.shape[:-1]) + (1, 1, mask.shape[-1])
    return TT(shape, dtype)

