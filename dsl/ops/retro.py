"""RETRO chunked cross-attention: each chunk of the sequence attends to the encoded
retrieved neighbours of the chunk before it.

    chunked_cross_attention(q, k, v, chunk)
        q     (B, T, H*D)        queries from the sequence
        k, v  (B, C, N, H*D)     keys/values from the encoded neighbours of each of the C
                                 chunks (N = neighbours * tokens per neighbour, attended
                                 jointly)
    -> (B, T, H*D)

The causal shift of the RETRO paper (Borgeaud et al. 2022, sec. 2.4): with chunk size m,
token t attends to the neighbours of chunk u = (t + 1) // m - 1, i.e. the window
[u*m + m - 1, (u+1)*m + m - 1) reads chunk u's neighbours; those were retrieved with chunk
u's tokens, all at or before t, so no token sees its own future. The first m - 1 tokens (and
any token whose chunk has no neighbours, u >= C) get zeros, so they pass through on the
residual.
"""
from __future__ import annotations

from ..dims import DimLike, dim_div, dim_mul, numel, shape_str
from ..scratch import copy_unless_viewable
from . import TT, ShapeError, is_float, op


def _flops(out: TT, q: TT, k: TT, *_rest, **_a) -> DimLike:
    return dim_mul(4, dim_mul(numel(out.shape), k.shape[2]))


def _scratch(node, args, cache):
    # float64 scores over one chunk's N neighbours per (b, h); head views of q, k, v
    q, k, v = args
    B, T, HD = q.shape
    H = node.attrs.get("heads", 1)
    out = [("scores", (B * H, k.shape[2]), "float64"), ("acc", (B * H, HD // H), "float64")]
    return out + copy_unless_viewable("q", q) + copy_unless_viewable("k", k) + \
        copy_unless_viewable("v", v)


@op("chunked_cross_attention", inputs=("q", "k", "v"),
    attrs={"chunk": None, "heads": 1, "scale": None},
    flops=_flops, traits=("attention", "composite", "mixes_positions"), scratch=_scratch)
def chunked_cross_attention(q: TT, k: TT, v: TT, chunk=None, heads: int = 1,
                            scale: float | None = None) -> TT:
    """chunked_cross_attention(q, k, v, chunk, heads=1, scale=1/sqrt(D)): token t attends to
    the neighbours of chunk (t+1)//chunk - 1; q (B, T, H*D), k/v (B, C, N, H*D)"""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise ShapeError(f"chunked_cross_attention: chunk must be a positive whole number (the "
                         f"chunk size m), got {chunk!r}")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
        raise ShapeError(f"chunked_cross_attention: heads must be a positive whole number, "
                         f"got {heads!r}")
    if len(q.shape) != 3 or not is_float(q.dtype):
        raise ShapeError(f"chunked_cross_attention: q must be a float (B, T, heads*D) tensor, "
                         f"got {q}", arg=0)
    if dim_div(q.shape[-1], heads) is None:
        raise ShapeError(f"chunked_cross_attention: {q.shape[-1]} features do not divide into "
                         f"heads={heads}", arg=0)
    for i, (t, what) in ((1, (k, "k")), (2, (v, "v"))):
        if len(t.shape) != 4 or not is_float(t.dtype):
            raise ShapeError(f"chunked_cross_attention: {what} must be a float (B, chunks, "
                             f"neighbour tokens, heads*D) tensor, got {t}", arg=i)
        if t.shape[0] != q.shape[0] or t.shape[-1] != q.shape[-1]:
            raise ShapeError(f"chunked_cross_attention: {what} {shape_str(t.shape)} must match "
                             f"q {shape_str(q.shape)} in batch and features", arg=i)
    if tuple(v.shape) != tuple(k.shape):
        raise ShapeError(f"chunked_cross_attention: v {shape_str(v.shape)} must have the shape "
                         f"of k {shape_str(k.shape)}", arg=2)
    return q
