"""Score biases from positions: T5 relative position buckets and ALiBi, for a plain forward
and for a decoding session.

In a session the bias of T new queries (positions pos..pos+T-1) against every key
position 0..L-1 (L = max_seq) is a slice of one table over relative distances
r = key - query in [lo, hi]: bias[0, h, i, j] = rel[h, j - (pos + i) - lo]. It has the
layout (1, H, T, max_seq) that only a cached attention reads (runtime/kv_cache.py checks
that), and it is indexed by absolute key position, so the new rows are computed against
every cached key without recomputing earlier rows.
"""
from __future__ import annotations

import numpy as np

from ..kernels import attention as k_attn, relative_position as k_rel
from . import steps_for


@steps_for("relative_position_bias")
def build_relative_position_bias(P, node, args, attrs):
    if _in_session(P, node):
        return _session_bias(P, node, args, attrs)
    xq, xk, table = args
    T, S = xq.shape[-2], xk.shape[-2]
    offset = int(attrs.get("offset") or 0)
    lo, hi = -(offset + T - 1), S - 1 - offset          # every key - query distance met
    buckets = k_rel.bucket_table(lo, hi, bool(attrs.get("bidirectional", True)),
                                 table.shape[0], attrs.get("max_distance", 128))
    out = P.output()
    P.step(k_rel.relative_position_bias, out, table, buckets, lo, offset)
    return out


@steps_for("alibi")
def build_alibi(P, node, args, attrs):
    if _in_session(P, node):
        return _session_bias(P, node, args, attrs)
    out = P.output()
    slopes = k_attn.alibi_slopes(attrs.get("heads", 1))
    P.step(k_attn.alibi, out, slopes, bool(attrs.get("symmetric")))
    return out


def _in_session(P, node) -> bool:
    return P.session is not None and P.is_dynamic(node.id)


def _relative_table(node, args, L: int, offset: int) -> tuple[np.ndarray, int]:
    """(H, hi - lo + 1) bias per relative distance, and lo."""
    lo, hi = -(L - 1) - max(offset, 0), (L - 1) - min(offset, 0)
    rel = np.arange(lo, hi + 1)
    if node.op == "relative_position_bias":
        table = args[2]                                                  # (NB, H)
        b = k_rel.relative_position_bucket(rel, bool(node.attrs.get("bidirectional", True)),
                                           table.shape[0], node.attrs.get("max_distance", 128))
        return np.ascontiguousarray(table[b].T), lo                     # (H, R)
    slopes = k_attn.alibi_slopes(node.attrs.get("heads", 1))             # (H,)
    # -slope * |query - key|: per visible (causal) row this differs from the reference's
    # -slope * (S - 1 - key) by a constant, which softmax ignores
    return (-slopes[:, None] * np.abs(rel)[None, :]), lo


def _session_bias(P, node, args, attrs):
    sess = P.session
    L = sess.max_seq
    T = args[0].shape[-2]
    offset = int(attrs.get("offset") or 0) if node.op == "relative_position_bias" else 0
    rel, lo = _relative_table(node, args, L, offset)
    H = rel.shape[0]
    out = sess.buffer(node.id, (1, H, T, L), node.dtype)            # (1, H, T, L)

    def run():
        for i in range(T):
            start = -(sess.pos + offset + i) - lo
            out[0, :, i, :] = rel[:, start:start + L]
    P.step(run, op=node.op)
    return out
