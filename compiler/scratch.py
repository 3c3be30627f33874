"""Scratch memory per op: what a kernel needs besides its output, for the memory plan.

The activation arena (passes/plan_memory.py) holds every value *and* every kernel's
scratch, so the runtime allocates exactly the planned bytes. A rule here says, for one op
at concrete sizes, which scratch buffers its compiled kernel uses:

    RULES_SCRATCH[op](node, args, cache) -> [(tag, shape, dtype), ...]

`args` are `Arg(shape, dtype, layout)` with sizes bound; layout is "C" (C-contiguous),
"R" (rows: a last-axis slice of a contiguous value, so (B, T, H*D) still views as
(B, T, H, D)) or "S" (other strided views). `cache` is (slots, ring) when a decoding
session caches this attention, else None. The runtime (runtime/steps.py) asks for the
same tags with `P.temp(tag, shape, dtype)`; a tag it asks for that no rule planned is
allocated outside the arena and counted (tests keep that count at zero).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..dsl.ops import OPS
from ..dsl.ops.attention import PREFILL_ROWS
from ..dsl.ops.memory import LANES



@dataclass(frozen=True)
class Arg:
    shape: tuple[int, ...]
    dtype: str
    layout: str = "C"

    @property
    def contiguous(self) -> bool:
        return self.layout == "C"

    @property
    def viewable(self) -> bool:
        """Can the last axis be split into (heads, D) without a copy?"""
        return self.layout in ("C", "R")


Scratch = list[tuple[str, tuple[int, ...], str]]
RULES_SCRATCH: dict[str, Callable[..., Scratch]] = {}          # by op
RULES_SCRATCH_TRAIT: dict[str, Callable[..., Scratch]] = {}    # by trait (dsl/ops), for
# every op that has it, declared before or after this module was imported


def rule(*ops: str):
    def register(fn):
        for op in ops:
            RULES_SCRATCH[op] = fn
        return fn
    return register


def trait_rule(trait: str):
    def register(fn):
        RULES_SCRATCH_TRAIT[trait] = fn
        return fn
    return register


def rule_for(op: str) -> Callable[..., Scratch] | None:
    """The op's own rule, else its trait's; None: its kernels need no scratch."""
    fn = RULES_SCRATCH.get(op)
    if fn is None and op in OPS:
        fn = next((f for t, f in RULES_SCRATCH_TRAIT.items() if OPS[op].has(t)), None)
    return fn


def scratch_for(node, args: list[Arg], cache=None) -> Scratch:
    fn = rule_for(node.op)
    return fn(node, args, cache) if fn is not None else []


def _copy(tag: str, a: Arg, need_contiguous: bool = True) -> Scratch:
    ok = a.contiguous if need_contiguous else a.viewable
    return [] if ok else [(tag, a.shape, a.dtype)]


def _rows(a: Arg) -> int:
    return int(np.prod(a.shape[:-1], dtype=np.int64))


# a row-wise kernel reads its input as contiguous (rows, C)
@trait_rule("contiguous_rows")
def _rowwise(node, args, cache):
    return _copy("c", args[0])


# the fused residual + norm reads both summands as contiguous rows
@rule("add_layernorm", "add_rmsnorm")
def _add_norm(node, args, cache):
    return _copy("x", args[0]) + _copy("r", args[1])


# BLAS reads x as contiguous (rows, in)
@rule("linear", "linear_act")
def _linear(node, args, cache):
    return _copy("x", args[0])


# gated unit: the merged product [gate | up] (N, 2F) before the gated activation
@rule("linear_glu")
def _linear_glu(node, args, cache):
    x, w = args[:2]
    return _copy("x", x) + [("h", (_rows(x), w.shape[1]), node.dtype)]


# whole FFN: the hidden activations (N, F), and the merged [gate | up] when gated
@rule("ffn")
def _ffn(node, args, cache):
    x, w1, w2 = args[:3]
    out = _copy("x", x) + [("hidden", (_rows(x), w2.shape[0]), node.dtype)]
    if node.attrs.get("glu"):
        out.append(("h", (_rows(x), w1.shape[1]), node.dtype))
    return out


def _positions(node, x: Arg, positions: Arg | None) -> Scratch:
    """Positions (B, T) unless given (a copy of them if not contiguous), and the rotary
    angles' cos/sin per position: (B*T, 2, r/2) float64."""
    B, T, C = x.shape
    D = node.attrs.get("head_dim") or C // node.attrs["heads"]
    r = node.attrs.get("rotary_dim") or D
    out = [("pos", (B, T), "int64")] if positions is None else _copy("pos_c", positions)
    return out + [("rope_cs", (B * T, 2, r // 2), "float64")]


# rotary embedding: positions and their cos/sin table; x copied when not
# (B, T, H, D)-viewable
@rule("rope")
def _rope(node, args, cache):
    return _positions(node, args[0], args[1] if len(args) > 1 else None) + \
        _copy("rope_q", args[0], False)


def _attention(node, q: Arg, k: Arg, v: Arg, mask: Arg | None, cache,
               biased: bool = False) -> Scratch:
    B, T, C = q.shape
    S = k.shape[1]
    H = node.attrs["heads"]
    Hkv = node.attrs.get("kv_heads") or H
    D = C // H
    out = _copy("q", q, False) + _copy("k", k, False) + _copy("v", v, False)
    if mask is not None:
        out.append(("mask", mask.shape, "bool"))
    if cache is None and T > PREFILL_ROWS:
        # a prompt: per (batch, head) BLAS products through one (T, S) probability matrix
        return out + [("probs", (T, S), q.dtype)]
    if cache is None:
        # a plain forward: a transient cache holding keys 0..S-1
        return out + [("kc", (B, Hkv, S, D), q.dtype), ("vc", (B, Hkv, S, D), q.dtype),
                      ("kpos", (S,), "int64"), ("scores", (B * H, S), "float64"),
                      ("acc", (B * H, D), "float64")]
    slots, ring = cache
    if not ring and T > PREFILL_ROWS:
        # a prompt into a cache (or cross-attention over the encoder's keys): BLAS
        return out + [("probs", (T, slots), q.dtype)]
    if ring and T > 1:
        # prefill through a ring buffer: [ring | new keys] attended in scratch, a prompt
        # (without a bias by key position) through BLAS
        n = slots + T
        out += [("ring_k", (B, Hkv, n, D), q.dtype), ("ring_v", (B, Hkv, n, D), q.dtype),
                ("ring_pos", (n,), "int64")]
        if T > PREFILL_ROWS and not biased:
            return out + [("probs", (T, n), q.dtype)]
        return out + [("scores", (B * H, n), "float64"), ("acc", (B * H, D), "float64")]
    return out + [("scores", (B * H, slots), "float64"), ("acc", (B * H, D), "float64")]


# scaled dot-product attention: K/V laid out (B, Hkv, S, D), float64 scores per (b, h)
@rule("attention")
def _attention_rule(node, args, cache):
    mask = args[3] if len(args) > 3 else None
    return _attention(node, args[0], args[1], args[2], mask, cache, biased=len(args) > 4)


# RoPE inside attention: rotated q and k, positions, then attention's own scratch
@rule("rope_attention")
def _rope_attention(node, args, cache):
    q, k, v, *extra = args
    mask = extra.pop(0) if node.attrs.get("has_mask") else None
    biased = bool(node.attrs.get("has_bias"))
    if biased:
        extra.pop(0)
    out = [("q_rot", q.shape, q.dtype), ("k_rot", k.shape, k.dtype)]
    out += _positions(node, q, extra[0] if node.attrs.get("has_positions") else None)
    out += _copy("rope_q", q, False) + _copy("rope_k", k, False)
    # the rotated copies are contiguous, so attention copies at most v
    return out + _attention(node, Arg(q.shape, q.dtype), Arg(k.shape, k.dtype), v, mask, cache,
                            biased)


# MoE: router logits, the routing (choices, weights, per-expert token lists) and the
# gathered tokens / hidden / expert outputs of one expert at a time, float64 accumulator
@rule("moe")
def _moe(node, args, cache):
    x, router, w_up = args[:3]
    M, C = _rows(x), x.shape[-1]
    E, F = router.shape[1], w_up.shape[2]
    k = node.attrs.get("top_k", 1)
    gate = len(args) > 4
    return _copy("x", x) + [
        ("logits", (M, E), x.dtype), ("choice", (M, k), "int64"), ("weight", (M, k), "float64"),
        ("offsets", (E + 1,), "int64"), ("used", (E,), "int64"),
        ("slot_tok", (M * k,), "int64"), ("slot_w", (M * k,), "float64"),
        ("xg", (M, C), x.dtype), ("h", (M, F), x.dtype), ("hg", (M if gate else 0, F), x.dtype),
        ("y", (M, C), x.dtype), ("acc", (M, C), "float64")]


# product-key memory: per lane, both halves' scores, their top-k, the best k pairs
@rule("product_key_memory")
def _pkm(node, args, cache):
    q, keys, values = args
    n = keys.shape[2]
    k = node.attrs.get("topk", 32)
    lanes = max(1, min(_rows(q), LANES))
    return _copy("q", q) + [
        ("s", (lanes, 2, n), "float64"), ("top_v", (lanes, 2, k), "float64"),
        ("top_i", (lanes, 2, k), "int64"), ("best_v", (lanes, k), "float64"),
        ("best_i", (lanes, k), "int64"), ("acc", (lanes, values.shape[1]), "float64")]


# Longformer: bool global/padding masks, the global keys per row, float64 scores per (b, h)
@rule("longformer_attention")
def _longformer(node, args, cache):
    q = args[0]
    B, T, C = q.shape
    H = node.attrs.get("heads", 1)
    out = [("glob", (B, T), "bool"), ("gidx", (B, T), "int64"), ("gcount", (B,), "int64"),
           ("scores", (B * H, T), "float64"), ("acc", (B * H, C // H), "float64")]
    if len(args) > 7:
        out.append(("real", (B, T), "bool"))
    for tag, a in zip(("q", "k", "v", "qg", "kg", "vg"), args[:6]):
        out += _copy(tag, a, False)
    return out


# RETRO: float64 scores over one chunk's N neighbours per (b, h)
@rule("chunked_cross_attention")
def _retro(node, args, cache):
    q, k, v = args
    B, T, HD = q.shape
    H = node.attrs.get("heads", 1)
    out = [("scores", (B * H, k.shape[2]), "float64"), ("acc", (B * H, HD // H), "float64")]
    return out + _copy("q", q, False) + _copy("k", k, False) + _copy("v", v, False)


# additive padding mask: which keys are real, as bool
@rule("padding_mask")
def _padding_mask(node, args, cache):
    return [("ok", args[0].shape, "bool")]


# contiguous copies for kernels that read flat rows
@rule("embedding")
def _embedding(node, args, cache):
    return _copy("ids", args[0])


@rule("sinusoidal_positions")
def _sinusoidal(node, args, cache):
    return _copy("c", args[0])


@rule("prepend_memory")
def _prepend_memory(node, args, cache):
    return _copy("x", args[0])
