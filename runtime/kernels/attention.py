"""Attention (NumPy references): the scaled dot-product core and ALiBi biases.

The reference computes in float64 and casts back, so fast kernels are compared against
something more exact than themselves.
"""
from __future__ import annotations

import math

import numpy as np


def visible(T: int, S: int, causal: bool = False, window: int | None = None) -> np.ndarray:
    """(T, S) bool: may query i see key j? Query i sits at absolute position S - T + i."""
    i = np.arange(T)[:, None] + (S - T)
    j = np.arange(S)[None, :]
    ok = np.ones((T, S), dtype=bool)
    if causal:
        ok &= j <= i
    if window is not None:
        ok &= j > i - window                 # Mistral: i - window < j <= i
        if not causal:
            ok &= j < i + window             # symmetric: |i - j| < window
    return ok


# float64 scores the reference holds at once: queries are taken in blocks of rows so that
# a long sequence needs a few blocks' scratch, not several (B, H, T, S) arrays (2.5x the
# memory plan at T = 2048); the rows are independent, so blocks change nothing
REF_BLOCK = 1 << 18


def ref_attention(q, k, v, mask=None, bias=None, heads=1, kv_heads=None, causal=False,
                  window=None, scale=None, cache=False, layer=None):
    # q: (..., T, H*D)  k, v: (..., S, Hkv*D)  -> (..., T, H*D)
    *lead, T, C = q.shape
    S = k.shape[-2]
    H = heads
    Hkv = kv_heads or heads
    D = C // H
    qh = q.astype(np.float64).reshape(*lead, T, H, D).swapaxes(-2, -3)        # (..., H, T, D)
    kh = k.astype(np.float64).reshape(*lead, S, Hkv, D).swapaxes(-2, -3)      # (..., Hkv, S, D)
    vh = v.astype(np.float64).reshape(*lead, S, Hkv, D).swapaxes(-2, -3)
    # query head h reads K/V head h // (H / Hkv)
    kt = np.repeat(kh, H // Hkv, axis=-3).swapaxes(-1, -2)                   # (..., H, D, S)
    vh = np.repeat(vh, H // Hkv, axis=-3)                                    # (..., H, S, D)
    s = 1.0 / math.sqrt(D) if scale is None else float(scale)
    ok = visible(T, S, causal, window)                                       # (T, S)
    if mask is not None:
        ok = ok & (np.asarray(mask) != 0)[..., None, None, :]                # (..., 1, T, S)
    out = np.empty((*lead, H, T, D))
    rows = max(1, REF_BLOCK // (math.prod(lead) * H * S or 1))
    for t0 in range(0, T, rows):
        t = slice(t0, min(T, t0 + rows))
        scores = (qh[..., t, :] @ kt) * s                                    # (..., H, t, S)
        if bias is not None:
            scores = scores + _query_rows(bias, t, T)
        scores = np.where(ok[..., t, :], scores, -np.inf)
        # a row with every key masked has no softmax; define it as zeros (not NaN)
        m = scores.max(axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(scores - m)
        z = e.sum(axis=-1, keepdims=True)
        p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
        out[..., t, :] = p @ vh
    return out.swapaxes(-2, -3).reshape(*lead, T, C).astype(q.dtype)        # (..., T, H*D)


def _query_rows(x: np.ndarray, t: slice, T: int) -> np.ndarray:
    """The rows `t` of a (..., T or 1, S) bias (a bias of one row applies to every query)."""
    x = np.asarray(x)
    return x[..., t, :] if x.ndim >= 2 and x.shape[-2] == T else x


def alibi_slopes(heads: int) -> np.ndarray:
    """2^(-8h/n) for h = 1..n with n the largest power of two <= heads; the remaining heads
    take every other slope of the 2n sequence (the ALiBi paper's recipe)."""
    n = 2 ** int(math.floor(math.log2(heads)))
    base = 2.0 ** (-8.0 / n)
    slopes = [base ** h for h in range(1, n + 1)]
    if n < heads:
        extra = 2.0 ** (-4.0 / n)           # 2^(-8/(2n))
        slopes += [extra ** h for h in range(1, 2 * (heads - n), 2)]
    return np.array(slopes, dtype=np.float64)


def ref_alibi(x, heads=1, symmetric=False):
    S = x.shape[-2]
    slopes = alibi_slopes(heads)[:, None, None]                     # (H, 1, 1)
    j = np.arange(S)
    if symmetric:
        dist = np.abs(j[:, None] - j[None, :])                      # (S, S)
    else:
        dist = (S - 1 - j)[None, :]                                 # (1, S)
    return (-slopes * dist)[None].astype(np.float32)                # (1, H, 1|S, S)


# ---- compiled kernels (Numba) ------------------------------------------------------------
# Keys and values live in a cache laid out (B, Hkv, S, D) so one head's keys are
# contiguous; every slot carries the absolute position of its key (-1: empty), so the
# causal/window masks come from positions and a ring buffer (sliding window) needs no
# reordering. A plain forward pass uses a transient cache holding positions 0..S-1.

from ..jit import njit, prange  # noqa: E402


@njit(cache=True)
def kv_write(kc, vc, kpos, k, v, pos0, slot0, mod):
    # kc, vc: (B, Hkv, S_cap, D)  kpos: (S_cap,)  k, v: (B, S, Hkv, D) new keys/values
    # key t has position pos0 + t and goes to slot (slot0 + t) % mod
    B, S, Hkv, D = k.shape
    for t in range(S):
        slot = (slot0 + t) % mod
        kpos[slot] = pos0 + t
        for b in range(B):
            for h in range(Hkv):
                for d in range(D):
                    kc[b, h, slot, d] = k[b, t, h, d]
                    vc[b, h, slot, d] = v[b, t, h, d]


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def attend(out, q, kc, vc, kpos, n_slots, qpos0, mask, bias, causal, window, scale,
           scores, acc):
    # out, q: (B, T, H, D)  kc, vc: (B, Hkv, S_cap, D)  kpos: (S_cap,) key positions
    # query i sits at position qpos0 + i; slots [0, n_slots) are scanned
    # mask: (B, S_mask) bool by key position (S_mask = 0: none)
    # bias: (B, H, T, S_bias) by key position (S_bias = 0: none)
    # scores: (B*H, S_cap) and acc: (B*H, D) float64 scratch, one row per (batch, head)
    B, T, H, D = q.shape
    group = H // kc.shape[1]
    n_mask = mask.shape[1]
    n_bias = bias.shape[3]
    for bh in prange(B * H):
        b = bh // H
        h = bh % H
        hk = h // group
        for i in range(T):
            qp = qpos0 + i
            m = -np.inf
            for j in range(n_slots):
                p = kpos[j]
                ok = p >= 0
                if causal and p > qp:
                    ok = False
                if window > 0:
                    if p <= qp - window:
                        ok = False
                    if not causal and p >= qp + window:
                        ok = False
                if ok and p < n_mask and not mask[b, p]:
                    ok = False
                if ok:
                    s = 0.0
                    for d in range(D):
                        s += np.float64(q[b, i, h, d]) * kc[b, hk, j, d]
                    s *= scale
                    if p < n_bias:
                        s += bias[b, h, i, p]
                    scores[bh, j] = s
                    if s > m:
                        m = s
                else:
                    scores[bh, j] = -np.inf
            for d in range(D):
                acc[bh, d] = 0.0
            z = 0.0
            if m > -np.inf:
                for j in range(n_slots):
                    if scores[bh, j] > -np.inf:
                        e = np.exp(scores[bh, j] - m)
                        z += e
                        for d in range(D):
                            acc[bh, d] += e * vc[b, hk, j, d]
            # every key masked: zeros, as the reference defines it
            inv = 1.0 / z if z > 0.0 else 0.0
            for d in range(D):
                out[b, i, h, d] = acc[bh, d] * inv


def ref_rope_attention(q, k, v, *extra, has_mask=False, has_bias=False, has_positions=False,
                       head_dim=None, rotary_dim=None, theta=10000.0, interleaved=False,
                       offset=0, **attn):
    # the fused form of attention(rope(q), rope(k), v, mask?, bias?) (dsl/ops/fused.py)
    from .position import ref_rope
    rest = list(extra)
    mask = rest.pop(0) if has_mask else None
    bias = rest.pop(0) if has_bias else None
    pos = rest.pop(0) if has_positions else None
    rope = dict(head_dim=head_dim, rotary_dim=rotary_dim, theta=theta, interleaved=interleaved,
                offset=offset)
    heads = attn.get("heads", 1)
    qr = ref_rope(q, pos, heads=heads, **rope)
    kr = ref_rope(k, pos, heads=attn.get("kv_heads") or heads, **rope)
    return ref_attention(qr, kr, v, mask, bias, **attn)


@njit(cache=True)
def alibi(out, slopes, symmetric):
    # out: (1, H, 1|S, S) float32  slopes: (H,) float64; -slope * distance
    _, H, R, S = out.shape
    for h in range(H):
        for i in range(R):
            for j in range(S):
                dist = abs(i - j) if symmetric else S - 1 - j
                out[0, h, i, j] = -slopes[h] * dist
