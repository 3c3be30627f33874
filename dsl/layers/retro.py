"""RETRO's chunked cross-attention as a layer: queries from the sequence, keys/values from
the encoded neighbours of the preceding chunk (see dsl/ops/retro.py for the shift).

    x (B, T, d), neighbours (B, C, K, R, d_e) -> q (B, T, d), k/v (B, C, K*R, d)
      -> chunked_cross_attention -> o (B, T, d)
"""
from __future__ import annotations

from ..dims import dim_mul
from . import layer
from .attention import _project
from .basic import _size, _tensor


@layer("ChunkedCrossAttention", default_name="cca")
def chunked_cross_attention(ctx, x, neighbours, heads, chunk, bias=False, std=0.02):
    """ChunkedCrossAttention(x, neighbours, heads, chunk, bias=false): x (B, T, d) attends,
    chunk by chunk, to the encoded neighbours (B, C, K, R, d_e) of the chunk before"""
    x = _tensor(ctx, x, "ChunkedCrossAttention")
    nb = _tensor(ctx, neighbours, "ChunkedCrossAttention", 1)
    d, de = x.shape[-1], nb.shape[-1]
    if len(nb.shape) != 5 or not isinstance(de, int) or not isinstance(d, int):
        raise ctx.error(f"ChunkedCrossAttention: neighbours must be encoded (B, chunks, "
                        f"neighbours, tokens, d) with a known d, got {nb.tt}")
    H = _size(ctx, heads, "ChunkedCrossAttention: `heads`")
    m = _size(ctx, chunk, "ChunkedCrossAttention: `chunk`")
    B, C, K, R = nb.shape[:4]
    flat = ctx.op("reshape", nb, shape=[B, C, dim_mul(K, R), de])               # (B, C, K*R, d_e)
    q = _project(ctx, "q", x, d, d, bias, std)
    k = _project(ctx, "k", flat, de, d, bias, std)
    v = _project(ctx, "v", flat, de, d, bias, std)
    a = ctx.op("chunked_cross_attention", q, k, v, chunk=m, heads=H)   # (B, T, d)
    return _project(ctx, "o", a, d, d, bias, std)
