"""Longformer self-attention as a layer: local projections `query/key/value`, global ones
`query_global/key_global/value_global`, the `longformer_attention` op, output `dense`.

    x (B, T, d) -> six projections (B, T, d) -> window + global attention -> dense (B, T, d)
"""
from __future__ import annotations

from . import layer
from .attention import _project
from .basic import _size, _tensor

PROJECTIONS = ("query", "key", "value", "query_global", "key_global", "value_global")


@layer("LongformerAttention", default_name="attn")
def longformer_attention(ctx, x, heads, window, global_mask, mask=None, bias=True, std=0.02):
    """LongformerAttention(x, heads, window, global_mask, mask=none, bias=true): sliding
    window (total width `window`, HF attention_window) plus global tokens (global_mask
    (B, T), 1 = global) with their own projections; mask (B, T) 1 = real token"""
    from ..values import Tensor
    x = _tensor(ctx, x, "LongformerAttention")
    d = x.shape[-1]
    if not isinstance(d, int):
        raise ctx.error(f"LongformerAttention: the input's last dimension {d} must be known")
    H = _size(ctx, heads, "LongformerAttention: `heads`")
    if d % H:
        raise ctx.error(f"LongformerAttention: d_model {d} does not divide into {H} heads")
    for what, v in (("global_mask", global_mask), ("mask", mask)):
        if v is not None and not isinstance(v, Tensor):
            raise ctx.error(f"LongformerAttention: `{what}` must be a tensor")
    qkv = [_project(ctx, name, x, d, d, bias, std) for name in PROJECTIONS]  # 6 x (B, T, d)
    masks = [global_mask] + ([mask] if mask is not None else [])
    a = ctx.op("longformer_attention", *qkv, *masks, heads=H, window=window)
    return _project(ctx, "dense", a, d, d, bias, std)                  # (B, T, d)
