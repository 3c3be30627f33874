"""Attention layers: projections in sub-scopes `q`, `k`, `v`, `o`, around the primitive
`attention` op (and `rope` when rotary positions are on).

    x (B, T, d) -> q = x @ Wq + bq   (B, T, H*hd)
                   k = kv @ Wk + bk  (B, S, Hkv*hd)      kv = x unless cross-attention
                   v = kv @ Wv + bv  (B, S, Hkv*hd)
                   rope(q), rope(k)                      if rope
                   a = attention(q, k, v, mask?)         (B, T, H*hd)
                -> a @ Wo + bo       (B, T, d)
"""
from __future__ import annotations

from . import layer
from .basic import _size, _tensor


def _project(ctx, name: str, x, d_in: int, d_out: int, bias: bool, std: float):
    with ctx.sub(name):
        w = ctx.param("weight", (d_in, d_out), std=std)
        if bias:
            return ctx.op("linear", x, w, ctx.param("bias", (d_out,), init="zeros"))
        return ctx.op("linear", x, w)


def _layer_index(scope: str) -> int | None:
    """The repeat index this layer sits in (`layers.3.attn` -> 3), for the cache plan."""
    nums = [p for p in scope.split(".") if p.isdigit()]
    return int(nums[-1]) if nums else None


@layer("Attention", default_name="attn")
def attention(ctx, x, heads, kv_heads=None, causal=False, bias=True, out_bias=None,
              scale=None, rope=None, rotary_dim=None, rope_interleaved=False, positions=None,
              window=None, mask=None, kv=None, head_dim=None, cache=True, dropout=0.0,
              std=0.02, score_bias=None, memory=None):
    """Attention(x, heads, kv_heads=heads, causal=false, bias=true, out_bias=bias,
    scale=1/sqrt(head_dim), rope=none|true|theta, rotary_dim=head_dim,
    rope_interleaved=false, positions=none, window=none, mask=none, kv=none (keys/values
    from this tensor: cross-attention), head_dim=d/heads, cache=true, dropout=0.0,
    score_bias=none (a tensor added to the scores, broadcast to (B, H, T, S)),
    memory=none (N learned key/value slots prepended to the keys and values))"""
    from ..values import Tensor
    x = _tensor(ctx, x, "Attention")
    d = x.shape[-1]
    if not isinstance(d, int):
        raise ctx.error(f"Attention: the input's last dimension {d} must be a known size")
    H = _size(ctx, heads, "Attention: `heads`")
    Hkv = H if kv_heads is None else _size(ctx, kv_heads, "Attention: `kv_heads`")
    if H % Hkv:
        raise ctx.error(f"Attention: heads={H} is not a multiple of kv_heads={Hkv}",
                        "each K/V head serves an equal group of query heads")
    if head_dim is None:
        if d % H:
            raise ctx.error(f"Attention: d_model {d} does not divide into {H} heads",
                            "give head_dim explicitly, or choose heads dividing the width")
        hd = d // H
    else:
        hd = _size(ctx, head_dim, "Attention: `head_dim`")
    src = x if kv is None else _tensor(ctx, kv, "Attention: `kv`")
    if not isinstance(src.shape[-1], int):
        raise ctx.error(f"Attention: kv's last dimension {src.shape[-1]} must be a known size")
    out_bias = bias if out_bias is None else out_bias
    for what, v in (("mask", mask), ("positions", positions)):
        if v is not None and not isinstance(v, Tensor):
            raise ctx.error(f"Attention: `{what}` must be a tensor or none")

    q = _project(ctx, "q", x, d, H * hd, bias, std)                 # (B, T, H*hd)
    k = _project(ctx, "k", src, src.shape[-1], Hkv * hd, bias, std)  # (B, S, Hkv*hd)
    v = _project(ctx, "v", src, src.shape[-1], Hkv * hd, bias, std)
    if rope is not None and rope is not False:
        theta = 10000.0 if rope is True else rope
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
            raise ctx.error(f"Attention: rope must be none, true or a base theta, got {rope!r}")
        attrs = dict(head_dim=hd, rotary_dim=hd if rotary_dim is None else rotary_dim,
                     theta=float(theta), interleaved=bool(rope_interleaved))
        extra = [] if positions is None else [positions]
        q = ctx.op("rope", q, *extra, heads=H, **attrs)
        k = ctx.op("rope", k, *extra, heads=Hkv, **attrs)
    if memory:
        # persistent memory: N learned key/value slots every query sees (after rope: they
        # have no position); prepended, so a causal query i at S - T + i sees all of them
        N = _size(ctx, memory, "Attention: `memory`")
        if window is not None:
            raise ctx.error("Attention: `memory` slots with a sliding `window` are not "
                            "supported", "the window would hide the slots from later tokens")
        with ctx.sub("memory"):
            mk = ctx.param("k", (N, Hkv * hd), std=std)
            mv = ctx.param("v", (N, Hkv * hd), std=std)
        k = ctx.op("prepend_memory", k, mk)                          # (B, N+S, Hkv*hd)
        v = ctx.op("prepend_memory", v, mv)
        if mask is not None:
            mask = ctx.op("memory_mask", mask, slots=N)
    args = [q, k, v] + ([mask] if mask is not None else [])
    if score_bias is not None:
        # added to the scores (T5's shared relative position bias); rides in the op's
        # `bias` slot, which comes after `mask`
        if not isinstance(score_bias, Tensor) or mask is None:
            raise ctx.error("Attention: `score_bias` must be a tensor, given with `mask`",
                            "pass the padding mask (1 = attend) alongside the bias")
        args.append(score_bias)
    a = ctx.op("attention", *args, heads=H, kv_heads=Hkv, causal=bool(causal), window=window,
               scale=None if scale is None else float(scale), cache=bool(cache),
               layer=_layer_index(ctx.scope))                      # (B, T, H*hd)
    y = _project(ctx, "o", a, H * hd, d, out_bias, std)             # (B, T, d)
    if dropout:
        y = ctx.op("dropout", y, rate=float(dropout))
    return y
