"""Longformer: sliding-window plus global attention."""
from __future__ import annotations

import math

import numpy as np

from ..kernels import longformer as k_long
from . import fallback, heads_view, steps_for

@steps_for("longformer_attention")
def build_longformer_attention(P, node, args, attrs):
    q, k, v, qg, kg, vg, glob_mask, *mask = args
    if q.ndim != 3 or any(a.dtype != q.dtype for a in (k, v, qg, kg, vg)) or q.dtype.kind != "f":
        return fallback("compiled for float projections of one dtype, (B, T, H*D)")
    B, T, C = q.shape
    H = attrs.get("heads", 1)
    D = C // H
    scale = 1.0 / math.sqrt(D) if attrs.get("scale") is None else float(attrs["scale"])
    glob = P.temp("glob", (B, T), np.bool_)
    P.step(np.not_equal, glob_mask, 0, glob)
    if mask:
        real = P.temp("real", (B, T), np.bool_)
        P.step(np.not_equal, mask[0], 0, real)
    else:
        real = np.zeros((B, 0), np.bool_)
    out = P.output()
    views = [heads_view(P, a, H, tag) for a, tag in zip((q, k, v, qg, kg, vg),
                                                     ("q", "k", "v", "qg", "kg", "vg"))]
    P.step(k_long.longformer_attention, out.reshape(B, T, H, D), *views, glob, real,
           int(attrs.get("window", 2)) // 2, scale, P.temp("gidx", (B, T), np.int64),
           P.temp("gcount", (B,), np.int64), P.temp("scores", (B * H, T), np.float64),
           P.temp("acc", (B * H, D), np.float64))
    return out
