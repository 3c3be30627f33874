"""plan_kv_cache: lay out the key/value cache of every cached attention in one arena.

    attention (cache=true)        cache entry                         slots
    self, full context            K, V: (B, H_kv, S_max, D)           S_max
    self, sliding window W        K, V: (B, H_kv, min(W, S_max), D)   ring buffer
    cross (K/V from another       K, V: (B, H_kv, S_enc, D)           computed once from
      input, e.g. the encoder)                                        the encoder output
    every entry also stores       pos: (slots,) int64                 the absolute position
                                                                      of the key in each slot
                                                                      (the batch's prompts
                                                                      have equal lengths)

H_kv is the K/V head count (kv_heads), so grouped- and multi-query attention store only
what they read. Positions are stored with the keys so masks come from positions, never
from slot order: after a ring buffer wraps, slot 0 holds a newer key than slot W-1, and
causal/window masks and RoPE (already applied to the stored keys) stay correct.

Context length convention: S_max is `--max-seq` when given, else the first of these config
constants the model declares: max_seq, n_ctx, max_position_embeddings, block_size,
context_length, seq_len, max_len (`context_length(g)`). Other symbolic sizes (an encoder
length S) bind from `dims`, defaulting to S_max.

Arena: entries in graph order, each K then V then pos, offsets aligned to 64 bytes;
`KVPlan.total_bytes` is the arena size: exactly what a decoding session allocates
(runtime/kv_cache.py lays its caches out at these offsets). A plan over 1 GiB carries a warning; a plan over
`max_memory` is refused with an error saying by how much.

A non-causal self-attention (an encoder's) sees its whole input at once, so it gets no
cache even when declared `cache=true`. A session that knows which attentions it caches
(and which read encoder K/V) passes them as `select`: [(node id, is_cross), ...].

Requires: nothing. Ensures: the graph is unchanged; graph.meta["kv_plan"] is a `KVPlan`
(or None when the model has no cached attention or no known context length).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ...dsl.dims import dim_div, evaluate
from ...dsl.errors import ArchError
from ...dsl.graph import Graph
from ...dsl.ops import trait
from ..ir import PassResult
from ..sizes import CONTEXT_NAMES, align, context_length, fmt_bytes

LARGE = 1 << 30
POS_DTYPE = "int64"


@dataclass
class KVEntry:
    node: str                 # the attention node
    scope: str
    kind: str                 # "self" | "window" | "cross"
    kv_heads: int
    head_dim: int
    slots: int
    dtype: str
    k_offset: int = 0
    v_offset: int = 0
    pos_offset: int = 0
    kv_bytes: int = 0         # bytes of K (V is the same)
    pos_bytes: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return (-1, self.kv_heads, self.slots, self.head_dim)

    @property
    def bytes(self) -> int:
        return 2 * self.kv_bytes + self.pos_bytes


@dataclass
class KVPlan:
    batch: int
    max_seq: int
    max_seq_from: str
    entries: list[KVEntry] = field(default_factory=list)
    total_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    def bytes_per_token(self) -> int:
        """Cache bytes one more token of context adds (full-context self-attention only;
        windowed and cross caches do not grow), per sequence."""
        itemsize = {e.dtype: np.dtype(e.dtype).itemsize for e in self.entries}
        return sum(2 * e.kv_heads * e.head_dim * itemsize[e.dtype] + np.dtype(POS_DTYPE).itemsize
                   for e in self.entries if e.kind == "self")


def _source(g: Graph, nid: str) -> str:
    """The tensor a q/k/v projection reads: walk back through rope, split, linear."""
    seen = 0
    while trait(g.node(nid).op, "keeps_tokens") and g.args(nid) and seen < 16:
        nid = g.args(nid)[0]
        seen += 1
    return nid


def plan(g: Graph, batch: int = 1, max_seq: int | None = None,
         dims: Mapping[str, int] | None = None,
         select: list[tuple[str, bool]] | None = None) -> KVPlan | None:
    if select is None:
        attn = [n for n in g.nodes() if trait(n.op, "caches_kv") and n.attrs.get("cache")]
    else:
        attn = [g.node(nid) for nid, _ in select]
    chosen = dict(select or [])
    source = "--max-seq"
    if max_seq is None:
        max_seq, source = context_length(g)
        if max_seq is None:
            return None
    kp = KVPlan(batch, max_seq, source)
    off = 0
    for node in attn:
        q, k = g.args(node.id)[:2]
        qn, kn = g.node(q), g.node(k)
        heads = node.attrs.get("heads", 1)
        kv_heads = node.attrs.get("kv_heads") or heads
        head_dim = dim_div(qn.shape[-1], heads)
        cross = chosen[node.id] if select is not None else _source(g, q) != _source(g, k)
        window = node.attrs.get("window")
        if select is None and not cross and not node.attrs.get("causal"):
            continue   # an encoder's self-attention sees the whole input at once: no cache
        if cross:
            kind = "cross"
            S = kn.shape[-2]
            bind = {s: max_seq for s in ([] if isinstance(S, int) else S.symbols())}
            slots = evaluate(S, {**bind, **(dims or {})})
        elif window:
            kind, slots = "window", min(window, max_seq)
        else:
            kind, slots = "self", max_seq
        e = KVEntry(node.id, node.scope, kind, kv_heads, int(head_dim), slots, kn.dtype)
        e.kv_bytes = batch * kv_heads * slots * e.head_dim * np.dtype(kn.dtype).itemsize
        e.pos_bytes = slots * np.dtype(POS_DTYPE).itemsize
        e.k_offset = off
        e.v_offset = off = off + align(e.kv_bytes)
        e.pos_offset = off = off + align(e.kv_bytes)
        off += align(e.pos_bytes)
        kp.entries.append(e)
    if not kp.entries:
        return None
    kp.total_bytes = off
    if off > LARGE:
        kp.warnings.append(f"the KV cache is large: {fmt_bytes(off)} for batch {batch} and "
                           f"S_max {max_seq} ({source}); lower it with --max-seq")
    return kp


def plan_kv_cache(g: Graph, batch: int = 1, max_seq: int | None = None,
                  max_memory: int | None = None,
                  dims: Mapping[str, int] | None = None) -> PassResult:
    out = g.copy()
    kp = plan(out, batch, max_seq, dims)
    out.meta["kv_plan"] = kp
    notes = []
    if kp is None:
        if any(trait(n.op, "caches_kv") and n.attrs.get("cache") for n in out.nodes()):
            notes.append("KV cache not planned: the model declares no context length "
                         f"(one of {', '.join(CONTEXT_NAMES)} in config); give --max-seq")
        return PassResult(out, False, notes=notes)
    if max_memory is not None and kp.total_bytes > max_memory:
        raise ArchError(f"the KV cache needs {fmt_bytes(kp.total_bytes)} but --max-memory "
                        f"allows {fmt_bytes(max_memory)}: over by "
                        f"{fmt_bytes(kp.total_bytes - max_memory)}",
                        hint=f"lower --max-seq (now {kp.max_seq}) or the batch size (now "
                             f"{kp.batch}); each token of context costs "
                             f"{fmt_bytes(kp.bytes_per_token() * kp.batch)}")
    notes.extend(kp.warnings)
    notes.append(f"KV cache: {len(kp.entries)} layers, {fmt_bytes(kp.total_bytes)} "
                 f"(batch {kp.batch}, S_max {kp.max_seq} from {kp.max_seq_from})")
    return PassResult(out, False, {"kv caches": len(kp.entries)}, notes=notes)


def kv_table(kp: KVPlan | None) -> str:
    """`archc dump --kv`: one row per cached attention, then the total."""
    if kp is None:
        return "no KV cache: the model has no cached attention, or no context length " \
               "(declare max_seq in config, or give --max-seq)\n"
    lines = [f"KV cache plan: batch B={kp.batch}, S_max={kp.max_seq} ({kp.max_seq_from})",
             f"  {'layer':<24} {'kind':<7} {'shape (B, H_kv, slots, D)':<28} "
             f"{'K+V bytes':>14} {'pos bytes':>10} {'offset':>12}"]
    for e in kp.entries:
        shape = f"({kp.batch}, {e.kv_heads}, {e.slots}, {e.head_dim})"
        lines.append(f"  {e.scope or e.node:<24} {e.kind:<7} {shape:<28} "
                     f"{2 * e.kv_bytes:>14,} {e.pos_bytes:>10,} {e.k_offset:>12,}")
    lines.append(f"total: {kp.total_bytes:,} bytes = {fmt_bytes(kp.total_bytes)}"
                 f"; {kp.bytes_per_token():,} bytes per token of context per sequence")
    lines.extend(f"warning: {w}" for w in kp.warnings)
    return "\n".join(lines) + "\n"
