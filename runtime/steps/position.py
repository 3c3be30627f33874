"""Positions and the rotary embedding (RoPE), sinusoidal tables."""
from __future__ import annotations

import numpy as np

from ..kernels import position as k_pos
from . import fallback, steps_for, view_as

@steps_for("positions")
def build_positions(P, node, args, attrs):
    out = P.output()
    base = np.arange(out.shape[0], dtype=np.int64) + int(attrs.get("offset") or 0)
    sess = P.session
    if sess is not None and P.is_dynamic(node.id):
        P.step(lambda: np.add(base, sess.pos, out=out))     # positions continue the cache
    else:
        P.step(np.copyto, out, base)
    return out


def positions_for(P, node, B, T, offset, tag="pos"):
    """(B, T) positions offset + arange(T), continuing the cache in a decoding session."""
    pos = P.temp(tag, (B, T), np.int64)
    base = np.broadcast_to(np.arange(T, dtype=np.int64) + int(offset or 0), (B, T)).copy()
    sess = P.session
    if sess is not None and P.is_dynamic(node.id):
        P.step(lambda: np.add(base, sess.pos, out=pos))
    else:
        P.step(np.copyto, pos, base)
    return pos


def rope_table(P, attrs, pos, head_dim):
    """Steps writing the cos/sin table (B*T, 2, r/2) of positions `pos` (B, T) into
    planned scratch; returns it (one table for an attention's q and k)."""
    r = attrs.get("rotary_dim") or head_dim
    inv_freq = float(attrs.get("theta", 10000.0)) ** (-np.arange(0, r, 2, dtype=np.float64) / r)
    cs = P.temp("rope_cs", (pos.size, 2, r // 2), np.float64)
    flat = P.contiguous(pos, "pos_c").reshape(-1)
    P.lane_step([[(k_pos.rope_table, (cs, flat, inv_freq, n0, n1))]
                 for n0, n1 in P.row_lanes(pos.size, pos.size * r * 8)])
    return cs


def rotate(P, out, x, heads, attrs, cs, tag="rope_q"):
    """Steps rotating x (B, T, heads*D) into out by the table cs; rows cut across lanes."""
    B, T, C = x.shape
    D = head_dim(attrs, C, heads)
    x4 = view_as(x, (B, T, heads, D))
    if x4 is None:
        x4 = P.contiguous(x, tag).reshape(B, T, heads, D)
    out4 = out.reshape(B, T, heads, D)
    inter = bool(attrs.get("interleaved"))
    if not x4.flags.c_contiguous:
        # a head slice of a fused QKV output: copied whole, then rotated in place, since
        # the rotation vectorises only over contiguous rows (0.36 -> 0.17 ms at T = 512)
        P.step(np.copyto, out4, x4)
        x4 = out4
    P.lane_step([[(k_pos.rope_apply, (out4, x4, cs, inter, n0, n1))]
                 for n0, n1 in P.row_lanes(B * T, B * T * C)], op=P._node.op)


def head_dim(attrs, C, heads):
    return attrs.get("head_dim") or C // heads


@steps_for("rope")
def build_rope(P, node, args, attrs):
    x = args[0]
    if x.ndim != 3 or x.dtype.kind != "f":
        return fallback("compiled for a float x of shape (B, T, H*D)")
    B, T, C = x.shape
    pos = args[1] if len(args) > 1 else positions_for(P, node, B, T, attrs.get("offset"))
    out = P.output()
    cs = rope_table(P, attrs, pos, head_dim(attrs, C, attrs["heads"]))
    rotate(P, out, x, attrs["heads"], attrs, cs)
    return out

@steps_for("sinusoidal_positions")
def build_sinusoidal_positions(P, node, args, attrs):
    pos = args[0]
    out = P.output()
    P.step(k_pos.sinusoidal_positions, out.reshape(-1, out.shape[-1]),
           P.contiguous(pos, "c").reshape(-1), float(attrs.get("base", 10000.0)))
    return out
