"""T5's relative position bias as a layer: one learned (buckets, heads) table, computed once
per stack and passed to every attention as `score_bias`."""
from __future__ import annotations

from . import layer
from .basic import _size, _tensor


@layer("RelativePositionBias", default_name="relative_bias")
def relative_position_bias(ctx, xq, xk, heads, buckets=32, max_distance=128,
                           bidirectional=True, std=0.02):
    """RelativePositionBias(xq, xk, heads, buckets=32, max_distance=128, bidirectional=true):
    T5's bucketed bias (1, heads, Tq, Tk) from a learned `weight` (buckets, heads);
    bidirectional for an encoder, false (causal) for a decoder"""
    xq = _tensor(ctx, xq, "RelativePositionBias", 0)
    xk = _tensor(ctx, xk, "RelativePositionBias", 1)
    H = _size(ctx, heads, "RelativePositionBias: `heads`")
    NB = _size(ctx, buckets, "RelativePositionBias: `buckets`")
    table = ctx.param("weight", (NB, H), std=std)                     # (buckets, H)
    return ctx.op("relative_position_bias", xq, xk, table, bidirectional=bool(bidirectional),
                  max_distance=max_distance)
