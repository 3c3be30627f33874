"""Product-key memory layer (Lample et al. 2019): a query network, per-head product keys
and a large table of values. (Persistent memory slots are `Attention(..., memory=N)`.)

    x (B, T, d) -> query (B, T, H*Dk) -> top-k of n*n product keys per head
                -> softmax-weighted sum of `values` rows (B, T, d_out)
"""
from __future__ import annotations

from . import layer
from .basic import _size, _tensor


@layer("ProductKeyMemory", default_name="pkm")
def product_key_memory(ctx, x, n_keys, topk=32, heads=1, dim_key=None, out=None, std=0.02):
    """ProductKeyMemory(x, n_keys, topk=32, heads=1, dim_key=d/2, out=d): n_keys^2 memory
    slots addressed by two sub-key tables of n_keys each; params `query.weight/bias`,
    `keys` (heads, 2, n_keys, dim_key/2), `values` (n_keys^2, out)"""
    x = _tensor(ctx, x, "ProductKeyMemory")
    d = x.shape[-1]
    if not isinstance(d, int):
        raise ctx.error(f"ProductKeyMemory: the input's last dimension {d} must be known")
    n = _size(ctx, n_keys, "ProductKeyMemory: `n_keys`")
    H = _size(ctx, heads, "ProductKeyMemory: `heads`")
    dk = _size(ctx, d // 2 if dim_key is None else dim_key, "ProductKeyMemory: `dim_key`")
    if dk % 2:
        raise ctx.error(f"ProductKeyMemory: dim_key must be even (two halves), got {dk}")
    dout = _size(ctx, d if out is None else out, "ProductKeyMemory: `out`")
    with ctx.sub("query"):
        q = ctx.op("linear", x, ctx.param("weight", (d, H * dk), std=std),
                   ctx.param("bias", (H * dk,), init="zeros"))          # (B, T, H*dk)
    keys = ctx.param("keys", (H, 2, n, dk // 2), std=std)
    values = ctx.param("values", (n * n, dout), std=std)
    return ctx.op("product_key_memory", q, keys, values, topk=topk, heads=H)
