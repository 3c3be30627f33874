"""Attention's steps, every path in one home: a prompt or a few rows, with or without the
session's KV cache (runtime/kv_cache.py holds the cache; the steps that write and read
it are here).

Which path runs is `attention_path` (dsl/ops/attention.py), the same function the op's
scratch rule asks, so the buffers each path takes with `P.temp` are the ones the memory
plan gave it:

    prompt         BLAS products per (batch, head) around a masked softmax (kernels/prefill.py)
    transient      keys 0..S-1 into a transient cache, then the per-row kernel
    cross_prompt   cross-attention over the encoder's keys, laid out in the cache on the
    cross_decode   session's first forward, then only read (BLAS / per-row)
    ring_prompt    a sliding window's ring: its keys in position order in scratch, the new
    ring_prefill   keys after them, attended (BLAS / per-row), the newest kept in the ring
    cached_prompt  a full-context cache: new keys written, BLAS over keys 0..pos+T-1
    decode         new keys written, the per-row kernel over the cache

Keys are cached after RoPE with their absolute positions, so masks come from positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...dsl.ops.attention import PANEL, attention_path, prompt_rows
from ...dsl.scratch import Cache
from ..kernels import attention as k_attn, prefill as k_prefill
from . import fallback, steps_for, view_as
from .position import head_dim, positions_for, rope_table, rotate

@steps_for("attention")
def build_attention(P, node, args, attrs):
    q, k, v = args[:3]
    if q.ndim != 3 or not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        return fallback("compiled for float q, k, v of one dtype, (B, T, H*D)")
    mask = args[3] if len(args) > 3 else None
    bias = args[4] if len(args) > 4 else None
    return _attention(P, node, q, k, v, mask, bias, attrs)


@steps_for("rope_attention")
def build_rope_attention(P, node, args, attrs):
    q, k, v, *extra = args
    if q.ndim != 3 or not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        return fallback("compiled for float q, k, v of one dtype, (B, T, H*D)")
    mask = extra.pop(0) if attrs.get("has_mask") else None
    bias = extra.pop(0) if attrs.get("has_bias") else None
    B, T, _ = q.shape
    pos = extra.pop(0) if attrs.get("has_positions") else \
        positions_for(P, node, B, T, attrs.get("offset"))
    if k.shape[1] != T:
        return fallback("compiled for keys as long as the queries")
    H = attrs["heads"]
    qr = P.temp("q_rot", q.shape, q.dtype)
    kr = P.temp("k_rot", k.shape, k.dtype)
    cs = rope_table(P, attrs, pos, head_dim(attrs, q.shape[2], H))
    rotate(P, qr, q, H, attrs, cs)
    rotate(P, kr, k, attrs.get("kv_heads") or H, attrs, cs, "rope_k")
    return _attention(P, node, qr, kr, v, mask, bias, attrs)


@dataclass
class Call:
    """One attention as its path sees it: head views, the op's mask/bias arrays (or None),
    its attributes, and the session's cache entry (or None)."""
    out4: np.ndarray     # (B, T, H, D)
    q4: np.ndarray       # (B, T, H, D)
    k4: np.ndarray       # (B, S, Hkv, D)
    v4: np.ndarray
    mask: np.ndarray | None
    bias: np.ndarray | None
    causal: bool
    window: int
    scale: float
    entry: object = None     # kv_cache.CacheEntry


def _heads_of(P, x, shape, tag):
    v = view_as(x, shape)
    return v if v is not None else P.contiguous(x, tag).reshape(shape)


def _attention(P, node, q, k, v, mask, bias, attrs):
    B, T, C = q.shape
    S = k.shape[1]
    H = attrs["heads"]
    Hkv = attrs.get("kv_heads") or H
    D = C // H
    scale = 1.0 / math.sqrt(D) if attrs.get("scale") is None else float(attrs["scale"])
    out = P.output()
    a = Call(out.reshape(B, T, H, D), _heads_of(P, q, (B, T, H, D), "q"),
             _heads_of(P, k, (B, S, Hkv, D), "k"), _heads_of(P, v, (B, S, Hkv, D), "v"),
             mask, bias, bool(attrs.get("causal")), int(attrs.get("window") or 0), scale)
    a.entry = P.session.entries.get(node.id) if P.session is not None else None
    cache = Cache(a.entry.slots, a.entry.ring, a.entry.cross) if a.entry is not None else None
    PATHS[attention_path(T, cache, bias is not None)](P, a)
    return out


# ---- without a cache -------------------------------------------------------------------------

def _uncached_mask_bias(P, a: Call):
    B, T, H, _ = a.q4.shape
    S = a.k4.shape[1]
    if a.mask is not None:
        m = P.temp("mask", a.mask.shape, np.bool_)
        P.step(np.not_equal, a.mask, 0, m)
    else:
        m = np.zeros((B, 0), np.bool_)
    if a.bias is not None:
        bias4 = np.broadcast_to(a.bias, (B, H, T, S))
    else:
        bias4 = np.broadcast_to(np.zeros(1, a.q4.dtype), (B, H, T, 0))
    return m, bias4


def _prompt(P, a: Call) -> None:
    """A prompt's attention per (batch, head): two BLAS products around the masked softmax
    (kernels/prefill.py). The head slices are strided views BLAS reads in place (row
    stride H*D), so nothing is copied; query head h reads K/V head h // (H / Hkv). Under a
    causal or window mask the query rows go in blocks, each multiplied only with the keys
    some row of the block sees (causal T = S: about half the products); with lanes, the
    lanes share out the (batch, head) pairs."""
    m, bias4 = _uncached_mask_bias(P, a)
    T, S = a.q4.shape[1], a.k4.shape[1]
    probs, panels = _prompt_scratch(P, a, S)
    kc, vc = a.k4.transpose(0, 2, 1, 3), a.v4.transpose(0, 2, 1, 3)     # (B, Hkv, S, D) views
    P.lane_step(k_prefill.attention_calls(a.out4, a.q4, kc, vc, S, S - T, m, bias4, a.causal,
                                          a.window, a.scale, probs, panels, P.n_lanes))


def _prompt_scratch(P, a: Call, width: int):
    """A prompt's per-lane scratch over `width` keys, as its rule declares it
    (dsl/ops/attention.py prompt_scratch): probabilities (lanes, rows, width) and, for
    float32, the micro-kernel's panels (lanes, max(D, width), 16), else None."""
    L, T, D = P.plan_lanes, a.q4.shape[1], a.q4.shape[3]
    probs = P.temp("probs", (L, prompt_rows(T, a.causal, a.window), width), a.q4.dtype)
    if a.q4.dtype != np.float32:
        return probs, None
    return probs, P.temp("panels", (L, max(D, width), PANEL), np.float32)


def _transient(P, a: Call) -> None:
    """A plain forward of a few rows: a transient cache holding keys 0..S-1."""
    m, bias4 = _uncached_mask_bias(P, a)
    B, T, H, D = a.q4.shape
    S, Hkv = a.k4.shape[1], a.k4.shape[2]
    kc = P.temp("kc", (B, Hkv, S, D), a.q4.dtype)
    vc = P.temp("vc", (B, Hkv, S, D), a.q4.dtype)
    kpos = P.temp("kpos", (S,), np.int64)
    scores = P.temp("scores", (B * H, S), np.float64)
    acc = P.temp("acc", (B * H, D), np.float64)
    P.step(k_attn.kv_write, kc, vc, kpos, a.k4, a.v4, 0, 0, S)
    P.step(k_attn.attend, a.out4, a.q4, kc, vc, kpos, S, S - T, m, bias4, a.causal, a.window,
           a.scale, scores, acc)


# ---- with the session's cache ----------------------------------------------------------------

def _self_mask_bias(a: Call):
    """A cached self-attention's mask and bias: its padding masks are all ones (the
    generator fills them), its bias (1|B, H, T, max_seq) is indexed by key position."""
    B, T, H, _ = a.q4.shape
    m = np.zeros((B, 0), np.bool_)
    if a.bias is not None:
        bias4 = np.broadcast_to(a.bias, (B, H, T, a.bias.shape[-1]))
    else:
        bias4 = np.broadcast_to(np.zeros(1, a.q4.dtype), (B, H, T, 0))
    return m, bias4


def _defer_blas(P, q4, probs, panels, m, bias4) -> None:
    # attend_blas's kernels on one block's arguments, compiled with the program's others
    _, T, S = probs.shape
    mb, bb = m[0, :S] if m.shape[1] else m[0], bias4[0, 0, :T, :S] if bias4.shape[3] else \
        bias4[0, 0, :T]
    P.deferred(k_prefill.softmax_masked, probs[0], 0, mb, bb, False, 0, 1.0)
    if k_prefill.MICRO and panels is not None:
        kv = np.zeros((1, 1, S, q4.shape[3]), q4.dtype)
        P.deferred(k_prefill.attention_blocks, q4, q4, kv, kv, S, 0, m, bias4, False, 0, 1.0,
                   probs[0], panels[0], np.zeros((0, 4), np.int64), 0, 0)


def _cached_prompt(P, a: Call) -> None:
    """A prompt into a full-context cache: the new keys written at their positions, then
    BLAS products per (batch, head) over keys 0..pos+T-1."""
    e, sess = a.entry, a.entry.session
    T = a.q4.shape[1]
    m, bias4 = _self_mask_bias(a)
    probs, panels = _prompt_scratch(P, a, e.slots)
    lanes = P.ex.lanes

    def run_blas():
        pos = sess.pos
        k_attn.kv_write(e.kc, e.vc, e.kpos, a.k4, a.v4, pos, pos, e.slots)
        k_prefill.attend_blas(a.out4, a.q4, e.kc, e.vc, pos + T, pos, m, bias4, a.causal,
                              a.window, a.scale, probs, panels, lanes)
    P.step(run_blas, op="attention", blas=True)
    _defer_blas(P, a.q4, probs, panels, m, bias4)
    P.deferred(k_attn.kv_write, e.kc, e.vc, e.kpos, a.k4, a.v4, 0, 0, e.slots)


def _decode(P, a: Call) -> None:
    """A few new rows (a decode step): their keys written into the cache (a ring's slot
    p % W), then the per-row kernel over every cached key."""
    e, sess = a.entry, a.entry.session
    B, T, H, D = a.q4.shape
    cap, ring = e.slots, e.ring
    m, bias4 = _self_mask_bias(a)
    scores = P.temp("scores", (B * H, cap), np.float64)
    acc = P.temp("acc", (B * H, D), np.float64)

    def run():
        pos = sess.pos
        k_attn.kv_write(e.kc, e.vc, e.kpos, a.k4, a.v4, pos, pos % cap if ring else pos, cap)
        k_attn.attend(a.out4, a.q4, e.kc, e.vc, e.kpos, cap if ring else pos + T, pos, m,
                      bias4, a.causal, a.window, a.scale, scores, acc)
    P.step(run, op="attention")
    P.deferred(k_attn.attend, a.out4, a.q4, e.kc, e.vc, e.kpos, cap, 0, m, bias4, a.causal,
               a.window, a.scale, scores, acc)
    P.deferred(k_attn.kv_write, e.kc, e.vc, e.kpos, a.k4, a.v4, 0, 0, cap)


def _ring_scratch(P, a: Call):
    e = a.entry
    n = e.slots + a.q4.shape[1]
    tk = P.temp("ring_k", e.kc.shape[:2] + (n, e.kc.shape[3]), e.kc.dtype)
    tv = P.temp("ring_v", e.kc.shape[:2] + (n, e.kc.shape[3]), e.kc.dtype)
    return tk, tv, P.temp("ring_pos", (n,), np.int64)


def _ring_prompt(P, a: Call) -> None:
    """A prompt through a ring (sliding window): the ring's keys laid out in position
    order in scratch, the new keys after them, BLAS attention over that (scratch key j
    is position pos - held + j, so query i sits at held + i), then the newest keys go
    back into the ring. Position p always lives in ring slot p % cap."""
    e, sess = a.entry, a.entry.session
    kc, vc, kpos, cap = e.kc, e.vc, e.kpos, e.slots
    T = a.q4.shape[1]
    m, bias4 = _self_mask_bias(a)
    tk, tv, tpos = _ring_scratch(P, a)
    probs, panels = _prompt_scratch(P, a, cap + T)
    keep = min(T, cap)
    lanes = P.ex.lanes
    k4, v4 = a.k4, a.v4

    def run_blas():
        pos = sess.pos
        held = min(pos, cap)                  # the ring holds positions pos-held..pos-1
        start = (pos - held) % cap
        first = min(held, cap - start)        # from `start` to the ring's end, then wrap
        for src, dst in ((kc, tk), (vc, tv)):
            dst[:, :, :first] = src[:, :, start:start + first]
            dst[:, :, first:held] = src[:, :, :held - first]
        k_attn.kv_write(tk, tv, tpos, k4, v4, pos, held, cap + T)
        k_prefill.attend_blas(a.out4, a.q4, tk, tv, held + T, held, m, bias4, a.causal,
                              a.window, a.scale, probs, panels, lanes)
        k_attn.kv_write(kc, vc, kpos, k4[:, T - keep:], v4[:, T - keep:],
                        pos + T - keep, (pos + T - keep) % cap, cap)
    P.step(run_blas, op="attention", blas=True)
    _defer_blas(P, a.q4, probs, panels, m, bias4)
    P.deferred(k_attn.kv_write, tk, tv, tpos, k4, v4, 0, 0, cap + T)
    P.deferred(k_attn.kv_write, kc, vc, kpos, k4[:, T - keep:], v4[:, T - keep:], 0, 0, cap)


def _ring_prefill(P, a: Call) -> None:
    """Several rows through a ring with the per-row kernel: attend over [ring | new keys]
    in scratch, then keep the newest `cap` keys in the ring."""
    e, sess = a.entry, a.entry.session
    kc, vc, kpos, cap = e.kc, e.vc, e.kpos, e.slots
    B, T, H, D = a.q4.shape
    m, bias4 = _self_mask_bias(a)
    tk, tv, tpos = _ring_scratch(P, a)
    scores = P.temp("scores", (B * H, cap + T), np.float64)
    acc = P.temp("acc", (B * H, D), np.float64)
    keep = min(T, cap)
    k4, v4 = a.k4, a.v4

    def run():
        pos = sess.pos
        tk[:, :, :cap] = kc
        tv[:, :, :cap] = vc
        tpos[:cap] = kpos
        k_attn.kv_write(tk, tv, tpos, k4, v4, pos, cap, cap + T)
        k_attn.attend(a.out4, a.q4, tk, tv, tpos, cap + T, pos, m, bias4, a.causal,
                      a.window, a.scale, scores, acc)
        k_attn.kv_write(kc, vc, kpos, k4[:, T - keep:], v4[:, T - keep:],
                        pos + T - keep, (pos + T - keep) % cap, cap)
    P.step(run, op="attention")
    P.deferred(k_attn.attend, a.out4, a.q4, tk, tv, tpos, cap + T, 0, m, bias4, a.causal,
               a.window, a.scale, scores, acc)
    P.deferred(k_attn.kv_write, tk, tv, tpos, k4, v4, 0, 0, cap + T)


def _cross(P, a: Call, prompt: bool) -> None:
    """Cross-attention: keys/values come from the encoder side, fixed for the whole
    generation, laid out into the cache on the session's first forward, then only read."""
    e, sess = a.entry, a.entry.session
    kc, vc, kpos, S = e.kc, e.vc, e.kpos, e.slots
    B, T, H, D = a.q4.shape
    mask = a.mask
    if mask is not None:
        m = sess.buffer((P._node.id, "mask"), mask.shape, np.bool_)   # kept across steps
    else:
        m = np.zeros((B, 0), np.bool_)
    bias4 = np.broadcast_to(np.zeros(1, a.q4.dtype), (B, H, T, 0))
    k4, v4 = a.k4, a.v4

    def lay_out():
        k_attn.kv_write(kc, vc, kpos, k4, v4, 0, 0, S)
        if mask is not None:
            np.not_equal(mask, 0, m)
    if prompt:
        probs, panels = _prompt_scratch(P, a, S)
        lanes = P.ex.lanes

        def run_blas():
            pos = sess.pos
            if pos == 0:
                lay_out()
            k_prefill.attend_blas(a.out4, a.q4, kc, vc, S, pos, m, bias4, a.causal, a.window,
                                  a.scale, probs, panels, lanes)
        P.step(run_blas, op="attention", blas=True)
        _defer_blas(P, a.q4, probs, panels, m, bias4)
    else:
        scores = P.temp("scores", (B * H, S), np.float64)
        acc = P.temp("acc", (B * H, D), np.float64)

        def run():
            pos = sess.pos
            if pos == 0:
                lay_out()
            k_attn.attend(a.out4, a.q4, kc, vc, kpos, S, pos, m, bias4, a.causal, a.window,
                          a.scale, scores, acc)
        P.step(run, op="attention")
        P.deferred(k_attn.attend, a.out4, a.q4, kc, vc, kpos, S, 0, m, bias4, a.causal,
                   a.window, a.scale, scores, acc)
    P.deferred(k_attn.kv_write, kc, vc, kpos, k4, v4, 0, 0, S)


PATHS = {"prompt": _prompt, "transient": _transient, "cached_prompt": _cached_prompt,
         "decode": _decode, "ring_prompt": _ring_prompt, "ring_prefill": _ring_prefill,
         "cross_prompt": lambda P, a: _cross(P, a, True),
         "cross_decode": lambda P, a: _cross(P, a, False)}
