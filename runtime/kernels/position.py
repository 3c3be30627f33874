"""Positions (NumPy references): ranges, sinusoidal tables, rotary embeddings."""
from __future__ import annotations

import numpy as np


def ref_positions(x, axis=-1, offset=0):
    return np.arange(offset, offset + x.shape[axis], dtype=np.int64)


def ref_sinusoidal_positions(pos, dim=None, base=10000.0):
    # PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(same angle)
    i = np.arange(dim // 2, dtype=np.float64)
    angle = pos[..., None].astype(np.float64) / base ** (2 * i / dim)     # (..., dim/2)
    out = np.empty(pos.shape + (dim,), dtype=np.float64)
    out[..., 0::2] = np.sin(angle)
    out[..., 1::2] = np.cos(angle)
    return out.astype(np.float32)


def ref_rope(x, positions=None, heads=1, head_dim=None, rotary_dim=None, theta=10000.0,
             interleaved=False, offset=0):
    # x: (..., T, H*D); rotate the first rotary_dim dims of every head
    *lead, T, C = x.shape
    D = head_dim or C // heads
    r = rotary_dim or D
    if positions is None:
        positions = offset + np.arange(T)
    inv_freq = theta ** (-np.arange(0, r, 2, dtype=np.float64) / r)          # (r/2,)
    angle = np.asarray(positions, dtype=np.float64)[..., None] * inv_freq    # (..., T, r/2)
    cos = np.cos(angle)[..., None, :]                                        # (..., T, 1, r/2)
    sin = np.sin(angle)[..., None, :]
    xh = x.astype(np.float64).reshape(*lead, T, heads, D)
    rot, rest = xh[..., :r], xh[..., r:]
    if interleaved:          # GPT-J: pairs (0, 1), (2, 3), ...
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = np.empty_like(rot)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = b * cos + a * sin
    else:                    # LLaMA / NeoX rotate_half: pairs (i, i + r/2)
        a, b = rot[..., : r // 2], rot[..., r // 2:]
        out = np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    y = np.concatenate([out, rest], axis=-1).reshape(*lead, T, C)
    return y.astype(x.dtype)


# ---- compiled kernels (Numba) ------------------------------------------------------------

from ..jit import njit, prange  # noqa: E402


@njit(cache=True, parallel=True)
def rope(out, x, positions, inv_freq, interleaved):
    # out, x: (B, T, H, D)  positions: (B, T)  inv_freq: (r/2,) float64; dims >= r pass
    B, T, H, D = x.shape
    half = inv_freq.shape[0]
    r = 2 * half
    for bt in prange(B * T):
        b = bt // T
        t = bt % T
        pos = np.float64(positions[b, t])
        for k in range(half):
            c = np.cos(pos * inv_freq[k])
            s = np.sin(pos * inv_freq[k])
            if interleaved:
                i0 = 2 * k
                i1 = 2 * k + 1
            else:
                i0 = k
                i1 = k + half
            for h in range(H):
                a = np.float64(x[b, t, h, i0])
                z = np.float64(x[b, t, h, i1])
                out[b, t, h, i0] = a * c - z * s
                out[b, t, h, i1] = z * c + a * s
        for h in range(H):
            for d in range(r, D):
                out[b, t, h, d] = x[b, t, h, d]


@njit(cache=True, parallel=True)
def sinusoidal_positions(out, pos, base):
    # out: (P, dim) float32  pos: (P,); PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos
    P, dim = out.shape
    for p in prange(P):
        x = np.float64(pos[p])
        for i in range(dim // 2):
            a = x / base ** (2.0 * i / dim)
            out[p, 2 * i] = np.sin(a)
            out[p, 2 * i + 1] = np.cos(a)
