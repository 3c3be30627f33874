"""lower_layers: replace composite ops by primitive ones, keeping each node's scope and span.

Layer macros (dsl/layers/) emit primitive ops except for a few composite ones. `attention`
is lowered here to the scaled dot-product written out (q: (*L, T, H*D), k, v: (*L, S, Hkv*D),
*L the batch dims, n = len(L)):

    before                                  after
    attention(q, k, v, mask?, bias?,        qh = transpose(reshape(q, [*L, T, H, D]))      (*L, H, T, D)
              heads=H, kv_heads=Hkv,        kh = transpose(reshape(k, [*L, S, Hkv, D]))    (*L, Hkv, S, D)
              causal, window, scale)        vh = likewise from v
                                            GQA (Hkv < H): kh = reshape(stack(kh x G, axis=n+1),
                                                [*L, H, S, D]), G = H / Hkv; likewise vh
                                            s = matmul(qh, transpose(kh)) * scale          (*L, H, T, S)
                                                + bias                                     if bias
                                                + attention_mask(q, k, causal, window)     (T, S)
                                                + padding_mask(mask)                       (*L, 1, 1, S)
                                            o = matmul(softmax(s), vh)                     (*L, H, T, D)
                                            reshape(transpose(o), [*L, T, H*D])

`scale` defaults to 1/sqrt(D) and is left out when it is 1. The masks are additive (0 or
-inf, dsl/ops/masks.py); a row with every key masked gives zeros, as the op does. The
declarations with no primitive form, `cache` and `layer` (for the KV-cache plan), are kept
in graph.meta["lowered_attention"][output id] so fuse_attention restores them.

Kept whole, with the reason listed by `--explain`: ops with no primitive decomposition
(moe, longformer_attention, chunked_cross_attention, product_key_memory), fused ops a user
wrote (rope_attention), an attention whose head size is not a known number, and grouped
attention when the copies of its K/V heads (G per head, one `stack` argument each) would
take the graph past MAX_NODES: that is checked for the whole graph before any is written,
so 65,536 query heads over one K/V head cost nothing but the check.

Requires: a verified graph. Ensures: the same outputs (up to float rounding: the op computes
in float64); no `attention` op remains unless listed as kept.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable

import numpy as np

from ...dsl.dims import dim_div
from ...dsl.graph import Graph, Node
from ...dsl.ops import trait
from ...dsl.values import MAX_NODES
from ..ir import PassResult, emit, where
from ..patterns import Reject

META_KEY = "lowered_attention"


def _split_heads(g: Graph, x: str, lead: list, length, h: int, D: int, at: dict) -> str:
    """(*L, length, h*D) -> (*L, h, length, D)"""
    n = len(lead)
    r = emit(g, "reshape", [x], {"shape": [*lead, length, h, D]}, **at)
    return emit(g, "transpose", [r], {"perm": [*range(n), n + 1, n, n + 2]}, **at)


def _repeat_heads(g: Graph, xh: str, lead: list, groups: int, at: dict) -> str:
    """(*L, Hkv, S, D) -> (*L, Hkv*G, S, D), head h reading K/V head h // G (np.repeat)"""
    n = len(lead)
    st = emit(g, "stack", [xh] * groups, {"axis": n + 1}, **at)        # (*L, Hkv, G, S, D)
    hkv, _, S, D = g.node(st).shape[n:]
    return emit(g, "reshape", [st], {"shape": [*lead, hkv * groups, S, D]}, **at)


def lower_attention(g: Graph, node: Node) -> str | Reject:
    """Emit the primitive form of one attention node; returns the new output id, or why
    it stays whole."""
    q, k, v, *rest = g.args(node.id)
    a = node.attrs
    H = a.get("heads", 1)
    Hkv = a.get("kv_heads") or H
    qn, kn = g.node(q), g.node(k)
    *lead, T, C = qn.shape
    S = kn.shape[-2]
    D = dim_div(C, H)
    if not isinstance(D, int):
        return Reject(f"head size {C}/{H} is not a known number")
    at = {"scope": node.scope, "span": node.span}
    dtype = qn.dtype
    qh = _split_heads(g, q, lead, T, H, D, at)                            # (*L, H, T, D)
    kh = _split_heads(g, k, lead, S, Hkv, D, at)                          # (*L, Hkv, S, D)
    vh = _split_heads(g, v, lead, S, Hkv, D, at)
    if Hkv != H:
        kh = _repeat_heads(g, kh, lead, H // Hkv, at)                     # (*L, H, S, D)
        vh = _repeat_heads(g, vh, lead, H // Hkv, at)
    kt = emit(g, "transpose", [kh], {}, **at)                             # (*L, H, D, S)
    s = emit(g, "matmul", [qh, kt], **at)                                 # (*L, H, T, S)
    scale = 1.0 / math.sqrt(D) if a.get("scale") is None else float(a["scale"])
    if scale != 1.0:
        value = np.asarray(scale, dtype=dtype)
        c = g.add("const", [], shape=(), dtype=dtype, attrs={"value": value}, **at,
                  name=f"{node.id}.scale")
        s = emit(g, "mul", [s, c], **at)
    mask = rest[0] if rest else None
    bias = rest[1] if len(rest) > 1 else None
    if bias is not None:
        if g.node(bias).dtype != dtype:
            bias = emit(g, "cast", [bias], {"dtype": dtype}, **at)
        s = emit(g, "add", [s, bias], **at)
    if a.get("causal") or a.get("window") is not None:
        m = emit(g, "attention_mask", [q, k], {"causal": bool(a.get("causal")),
                                               "window": a.get("window")}, **at)  # (T, S)
        s = emit(g, "add", [s, m], **at)
    if mask is not None:
        m = emit(g, "padding_mask", [mask], {"dtype": dtype}, **at)     # (*L, 1, 1, S)
        s = emit(g, "add", [s, m], **at)
    p = emit(g, "softmax", [s], {"axis": -1}, **at)
    o = emit(g, "matmul", [p, vh], **at)                                  # (*L, H, T, D)
    n = len(lead)
    o = emit(g, "transpose", [o], {"perm": [*range(n), n + 1, n, n + 2]}, **at)
    out = emit(g, "reshape", [o], {"shape": [*lead, T, C]}, **at)        # (*L, T, H*D)
    g.meta.setdefault(META_KEY, {})[out] = {"cache": bool(a.get("cache")),
                                            "layer": a.get("layer")}
    return out


DECOMPOSE: dict[str, Callable] = {
    "attention": lower_attention,
}


def _head_copies(node: Node) -> int:
    """`stack` arguments the GQA repeat of one attention writes (K and V: G each)."""
    H = node.attrs.get("heads", 1)
    Hkv = node.attrs.get("kv_heads") or H
    return 0 if Hkv == H or not isinstance(H, int) or not isinstance(Hkv, int) \
        else 2 * (H // max(Hkv, 1))


def lower_layers(g: Graph) -> PassResult:
    out = g.copy()
    stats: Counter = Counter()
    kept: list[str] = []
    copies = sum(_head_copies(n) for n in g.nodes() if n.op == "attention")
    too_wide = len(g) + g.nx.number_of_edges() + copies > MAX_NODES
    for nid in g.topo():
        node = out.node(nid)
        if trait(node.op, "composite"):      # its kernel is the only implementation
            kept.append(f"{node.op} at {where(node)}: no primitive decomposition")
            stats[f"kept {node.op}"] += 1
        if node.op not in DECOMPOSE:
            continue
        if too_wide and _head_copies(node):
            new = Reject(f"writing out its {node.attrs['heads']:,} heads over "
                         f"{node.attrs['kv_heads']:,} K/V heads (with the graph's other "
                         f"grouped attentions) would pass {MAX_NODES:,} nodes and edges")
        else:
            new = DECOMPOSE[node.op](out, node)
        if isinstance(new, Reject):
            kept.append(f"{node.op} at {where(node)}: kept whole, {new.reason}")
            stats[f"kept {node.op}"] += 1
            continue
        out.replace_uses(nid, new)
        out.remove(nid)
        stats[node.op] += 1
    return PassResult(out, any(k in DECOMPOSE for k in stats), stats, kept)
