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


# RoPE in two kernels: the angles' cos/sin once per position (rope_table), shared by q and
# k of one attention, then the rotation (rope_apply) with its innermost loop over each
# head's dims. One kernel doing both took sin/cos twice per position (for q and for k)
# with its innermost loop over heads, D apart: 0.67 ms per call at T = 512, 12 heads of 64
# (16 ms of a LLaMA-style pass); now 0.26 ms for the table and 0.26 ms for q's rotation
# (0.08 when q is contiguous: LLVM vectorises only then). The arithmetic is the reference's,
# in float64.

@njit(cache=True, parallel=True, nogil=True)
def rope_table(cs, positions, inv_freq, n0, n1):
    # cs: (N, 2, r/2) float64 <- cos and sin of positions[n] * inv_freq, rows n0:n1 (a
    # lane's share)  positions: (N,)
    for n in prange(n0, n1):
        p = np.float64(positions[n])
        c = cs[n, 0]
        s = cs[n, 1]
        for k in range(inv_freq.shape[0]):
            a = p * inv_freq[k]
            c[k] = np.cos(a)
            s[k] = np.sin(a)


@njit(cache=True, parallel=True, nogil=True)
def rope_apply(out, x, cs, interleaved, n0, n1):
    # out, x: (B, T, H, D)  cs: (B*T, 2, r/2) from rope_table; rows b*T + t in n0:n1 only (a
    # lane's share): the first r dims of every head rotate, the rest are copied; out may be
    # x (each pair is read before it is written)
    B, T, H, D = x.shape
    half = cs.shape[2]
    r = 2 * half
    for n in prange(n0, n1):
        b = n // T
        t = n % T
        for h in range(H):
            if interleaved:
                for k in range(half):
                    a = np.float64(x[b, t, h, 2 * k])
                    z = np.float64(x[b, t, h, 2 * k + 1])
                    c = cs[n, 0, k]
                    s = cs[n, 1, k]
                    out[b, t, h, 2 * k] = a * c - z * s
                    out[b, t, h, 2 * k + 1] = z * c + a * s
            else:
                for k in range(half):
                    a = np.float64(x[b, t, h, k])
                    z = np.float64(x[b, t, h, k + half])
                    c = cs[n, 0, k]
                    s = cs[n, 1, k]
                    out[b, t, h, k] = a * c - z * s
                    out[b, t, h, k + half] = z * c + a * s
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
