"""RETRO: chunked cross-attention over retrieved neighbours."""
from __future__ import annotations

import math

import numpy as np

from ..kernels import retro as k_retro
from . import fallback, heads_view, steps_for

@steps_for("chunked_cross_attention")
def build_chunked_cross_attention(P, node, args, attrs):
    q, k, v = args
    if q.ndim != 3 or k.ndim != 4 or not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        return fallback("compiled for float q (B, T, H*D), k, v (B, C, N, H*D) of one dtype")
    B, T, HD = q.shape
    H = attrs.get("heads", 1)
    D = HD // H
    scale = 1.0 / math.sqrt(D) if attrs.get("scale") is None else float(attrs["scale"])
    out = P.output()
    P.step(k_retro.chunked_cross_attention, out.reshape(B, T, H, D), heads_view(P, q, H, "q"),
           heads_view(P, k, H, "k"), heads_view(P, v, H, "v"), int(attrs.get("chunk", 1)), scale,
           P.temp("scores", (B * H, k.shape[2]), np.float64),
           P.temp("acc", (B * H, D), np.float64))
    return out
