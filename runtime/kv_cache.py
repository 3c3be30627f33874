"""The KV cache of one generation: every cached self-attention's keys and values in one
arena, and the position the next token will take.

    entry per attention      K, V: (B, Hkv, slots, D)    pos: (slots,) key positions (-1 empty)
    full context             slots = max_seq             slot of position p is p
    sliding window W         slots = min(W, max_seq)     ring buffer: slot p % W

Keys are stored after RoPE, with their absolute positions, so the causal and window masks
come from positions and a wrapped ring buffer needs no reordering. Decoding never grows
the cache: a window model holds W slots however many tokens it generates.

A `Session` plugs into the executor's programs (Program(..., session)): attention steps
write the new keys/values into their entry and attend over it; `positions` and `rope`
count from `session.pos`. The session runs a prefill (the prompt, T tokens) and then one
program with T = 1 per generated token, reused every step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dsl.errors import ArchError
from .kernels import attention as k_attn

# ops whose result depends on where in the sequence a token sits, beyond what the
# session shifts itself (positions, rope, attention): a cached step cannot compute them
POSITIONAL = ("alibi", "relative_position_bias", "longformer_attention",
              "chunked_cross_attention", "prepend_memory", "memory_mask", "stack")
ATTENTION = ("attention", "rope_attention")


@dataclass
class CacheEntry:
    kc: np.ndarray       # (B, Hkv, slots, D)
    vc: np.ndarray
    kpos: np.ndarray     # (slots,) int64
    ring: bool
    session: "Session"

    @property
    def slots(self) -> int:
        return self.kpos.shape[0]

    def build(self, P, out4, q4, k4, v4, mask, bias4, causal, window, scale) -> np.ndarray:
        """Add the steps of one cached attention to program P."""
        kc, vc, kpos, cap, sess = self.kc, self.vc, self.kpos, self.slots, self.session
        B, T, H, D = q4.shape
        if self.ring and T > 1:
            # prefill through a ring: attend over [ring | new keys] in scratch, then keep
            # the newest `cap` keys in the ring
            tk = P.temp("ring_k", kc.shape[:2] + (cap + T, D), kc.dtype)
            tv = P.temp("ring_v", kc.shape[:2] + (cap + T, D), kc.dtype)
            tpos = P.temp("ring_pos", (cap + T,), np.int64)
            scores = P.temp("scores", (B * H, cap + T), np.float64)
            acc = P.temp("acc", (B * H, D), np.float64)
            keep = min(T, cap)

            def run():
                pos = sess.pos
                tk[:, :, :cap] = kc
                tv[:, :, :cap] = vc
                tpos[:cap] = kpos
                k_attn.kv_write(tk, tv, tpos, k4, v4, pos, cap, cap + T)
                k_attn.attend(out4, q4, tk, tv, tpos, cap + T, pos, mask, bias4, causal,
                              window, scale, scores, acc)
                k_attn.kv_write(kc, vc, kpos, k4[:, T - keep:], v4[:, T - keep:],
                                pos + T - keep, (pos + T - keep) % cap, cap)
            P.step(run, op="attention")
            P.deferred(k_attn.attend, out4, q4, tk, tv, tpos, cap + T, 0, mask, bias4, causal,
                       window, scale, scores, acc)
            P.deferred(k_attn.kv_write, tk, tv, tpos, k4, v4, 0, 0, cap + T)
            return out4.reshape(B, T, H * D)
        scores = P.temp("scores", (B * H, cap), np.float64)
        acc = P.temp("acc", (B * H, D), np.float64)
        ring = self.ring

        def run():
            pos = sess.pos
            k_attn.kv_write(kc, vc, kpos, k4, v4, pos, pos % cap if ring else pos, cap)
            k_attn.attend(out4, q4, kc, vc, kpos, cap if ring else pos + T, pos, mask, bias4,
                          causal, window, scale, scores, acc)
        P.step(run, op="attention")
        P.deferred(k_attn.attend, out4, q4, kc, vc, kpos, cap, 0, mask, bias4, causal, window,
                   scale, scores, acc)
        P.deferred(k_attn.kv_write, kc, vc, kpos, k4, v4, 0, 0, cap)
        return out4.reshape(B, T, H * D)


def cached_attentions(ex) -> list[str]:
    """Attention nodes a session caches: self-attention (keys from the tokens) with
    `cache` set. Raises ArchError naming what stops cached decoding."""
    g = ex.graph
    found = []
    for nid in g.topo():
        node = g.node(nid)
        if nid not in ex.dynamic:
            continue
        args = g.args(nid)
        if node.op in POSITIONAL or (node.op == "matmul" and all(a in ex.dynamic for a in args)):
            raise ArchError(f"`{node.op}` mixes positions of the sequence; this model cannot "
                            "decode with a KV cache", node.span)
        if node.op not in ATTENTION:
            continue
        if not node.attrs.get("cache"):
            raise ArchError("this attention declares no KV cache (cache=false)", node.span,
                            "decoding recomputes the whole sequence for every token")
        if node.attrs.get("has_mask") or node.attrs.get("has_bias") or \
                (node.op == "attention" and len(args) > 3):
            raise ArchError("cached decoding of attention with a mask or bias is not "
                            "supported yet", node.span)
        found.append(nid)
    return found


class Session:
    """One generation: the cache arena for batch B and `max_seq` positions, and `pos`."""

    def __init__(self, ex, batch: int, max_seq: int):
        self.ex = ex
        self.batch = batch
        self.max_seq = max_seq
        self.pos = 0
        g = ex.graph
        layout = []
        for nid in cached_attentions(ex):
            node = g.node(nid)
            H = node.attrs["heads"]
            Hkv = node.attrs.get("kv_heads") or H
            D = int(node.shape[-1]) // H
            window = node.attrs.get("window")
            ring = bool(window) and bool(node.attrs.get("causal"))
            slots = min(int(window), max_seq) if ring else max_seq
            layout.append((nid, Hkv, D, slots, ring, np.dtype(node.dtype)))
        # one arena: per entry K then V then positions, each 64-byte aligned
        offsets, off = [], 0
        for nid, Hkv, D, slots, ring, dt in layout:
            kv_bytes = _align(batch * Hkv * slots * D * dt.itemsize)
            offsets.append((off, off + kv_bytes, off + 2 * kv_bytes))
            off += 2 * kv_bytes + _align(slots * 8)
        self.nbytes = off
        self.arena = np.empty(off, np.uint8)
        self.entries: dict[str, CacheEntry] = {}
        for (nid, Hkv, D, slots, ring, dt), (ko, vo, po) in zip(layout, offsets):
            shape = (batch, Hkv, slots, D)
            n = batch * Hkv * slots * D * dt.itemsize
            kc = np.ndarray(shape, dt, buffer=self.arena[ko:ko + n])
            vc = np.ndarray(shape, dt, buffer=self.arena[vo:vo + n])
            kpos = np.ndarray((slots,), np.int64, buffer=self.arena[po:po + slots * 8])
            self.entries[nid] = CacheEntry(kc, vc, kpos, ring, self)
        self.bounded = all(e.ring for e in self.entries.values())
        self.reset()

    def reset(self) -> None:
        self.pos = 0
        for e in self.entries.values():
            e.kpos.fill(-1)

    def cache_entry(self, P, node, B, Hkv, D, dtype) -> CacheEntry | None:
        return self.entries.get(node.id)

    def forward(self, inputs: dict[str, np.ndarray], bindings: dict[str, int],
                profile=None) -> dict[str, np.ndarray]:
        """Run T new tokens (a prefill, or one decode step) and advance; returns views of
        the outputs, valid until the next call."""
        T = bindings["T"]
        if not self.bounded and self.pos + T > self.max_seq:
            raise ArchError(f"the KV cache holds {self.max_seq} positions; generating past "
                            f"position {self.pos + T} needs a larger --max-seq")
        prog = self.ex.program(bindings, self)
        prog.compile(profile)
        prog.execute(inputs, profile)
        self.pos += T
        return prog.output_values()


def _align(n: int) -> int:
    return -(-n // 64) * 64
