"""The KV cache of one generation: every cached attention's keys and values in one arena,
and the position the next token will take.

    entry per attention      K, V: (B, Hkv, slots, D)    pos: (slots,) key positions (-1 empty)
    self, full context       slots = max_seq             slot of position p is p
    self, sliding window W   slots = min(W, max_seq)     ring buffer: slot p % W
    cross (K/V from the      slots = S_enc               laid out once, on the first forward
      encoder side)

Keys are stored after RoPE, with their absolute positions, so the causal and window masks
come from positions and a wrapped ring buffer needs no reordering. Decoding never grows
the cache: a window model holds W slots however many tokens it generates.

A `Session` plugs into the executor's programs (Program(..., session)): attention steps
write the new keys/values into their entry and attend over it; `positions` and `rope`
count from `session.pos`. The session runs a prefill (the prompt, T tokens) and then one
program with T = 1 per generated token, reused every step.

Masks and biases in a cached step:
    padding-mask inputs the generator fills with ones (`ones`)   every key real: ignored
    a cross-attention's mask (encoder padding)                   by key position, as given
    relative_position_bias / alibi of the decoded sequence       rebuilt per step from
                                                                 positions: (1, H, T, max_seq)
The biases are indexed by absolute key position, so the new query row is computed against
every cached key without recomputing earlier rows; a per-relative-distance table (H, 2L-1)
is made once and each step copies T slices of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dsl.dims import Dim
from ..dsl.errors import ArchError
from .executor import kv_arena
from ..dsl.ops.attention import PREFILL_ROWS
from .kernels import attention as k_attn, prefill as k_prefill
from .kernels.relative_position import relative_position_bucket
from .steps import PREFILL_BLOCK, STEPS

# ops whose result depends on where in the sequence a token sits, beyond what the
# session shifts itself (positions, rope, attention, the biases below): a cached step
# cannot compute them
POSITIONAL = ("longformer_attention", "chunked_cross_attention", "prepend_memory",
              "memory_mask", "stack")
BIASES = ("alibi", "relative_position_bias")      # rebuilt per step from positions
ATTENTION = ("attention", "rope_attention")
# single-argument ops a padding mask may pass through on its way to an attention
MASK_PATH = ("cast", "reshape")


@dataclass
class CacheEntry:
    kc: np.ndarray       # (B, Hkv, slots, D)
    vc: np.ndarray
    kpos: np.ndarray     # (slots,) int64
    ring: bool
    session: "Session"
    cross: bool = False

    @property
    def slots(self) -> int:
        return self.kpos.shape[0]

    def build(self, P, out4, q4, k4, v4, mask, bias, causal, window, scale) -> np.ndarray:
        """Add the steps of one cached attention to program P; `mask`/`bias` are the op's
        arrays (or None) as the graph computes them."""
        if self.cross:
            return self._build_cross(P, out4, q4, k4, v4, mask, causal, window, scale)
        kc, vc, kpos, cap, sess = self.kc, self.vc, self.kpos, self.slots, self.session
        B, T, H, D = q4.shape
        m = np.zeros((B, 0), np.bool_)            # self-attention masks are all ones here
        if bias is not None:                      # (1|B, H, T, max_seq) by key position
            bias4 = np.broadcast_to(bias, (B, H, T, bias.shape[-1]))
        else:
            bias4 = np.broadcast_to(np.zeros(1, q4.dtype), (B, H, T, 0))
        if self.ring and T > PREFILL_ROWS and bias is None:
            return self._build_ring_prompt(P, out4, q4, k4, v4, m, bias4, causal, window,
                                           scale)
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
                k_attn.attend(out4, q4, tk, tv, tpos, cap + T, pos, m, bias4, causal,
                              window, scale, scores, acc)
                k_attn.kv_write(kc, vc, kpos, k4[:, T - keep:], v4[:, T - keep:],
                                pos + T - keep, (pos + T - keep) % cap, cap)
            P.step(run, op="attention")
            P.deferred(k_attn.attend, out4, q4, tk, tv, tpos, cap + T, 0, m, bias4, causal,
                       window, scale, scores, acc)
            P.deferred(k_attn.kv_write, tk, tv, tpos, k4, v4, 0, 0, cap + T)
            return out4.reshape(B, T, H * D)
        ring = self.ring
        if T > PREFILL_ROWS and not ring:
            # a prompt: BLAS products per (batch, head) over keys 0..pos+T-1 (steps.py)
            probs = P.temp("probs", (T, cap), q4.dtype)
            lanes = P.ex.lanes

            def run_blas():
                pos = sess.pos
                k_attn.kv_write(kc, vc, kpos, k4, v4, pos, pos, cap)
                k_prefill.attend_blas(out4, q4, kc, vc, pos + T, pos, m, bias4, causal,
                                      window, scale, probs, PREFILL_BLOCK, lanes)
            P.step(run_blas, op="attention", blas=True)
            _defer_blas(P, q4, probs, m, bias4)
            P.deferred(k_attn.kv_write, kc, vc, kpos, k4, v4, 0, 0, cap)
            return out4.reshape(B, T, H * D)
        scores = P.temp("scores", (B * H, cap), np.float64)
        acc = P.temp("acc", (B * H, D), np.float64)

        def run():
            pos = sess.pos
            k_attn.kv_write(kc, vc, kpos, k4, v4, pos, pos % cap if ring else pos, cap)
            k_attn.attend(out4, q4, kc, vc, kpos, cap if ring else pos + T, pos, m, bias4,
                          causal, window, scale, scores, acc)
        P.step(run, op="attention")
        P.deferred(k_attn.attend, out4, q4, kc, vc, kpos, cap, 0, m, bias4, causal, window,
                   scale, scores, acc)
        P.deferred(k_attn.kv_write, kc, vc, kpos, k4, v4, 0, 0, cap)
        return out4.reshape(B, T, H * D)

    def _build_ring_prompt(self, P, out4, q4, k4, v4, m, bias4, causal, window, scale):
        """A prompt through a ring (sliding window): the ring's keys laid out in position
        order in scratch, the new keys after them, BLAS attention over that (scratch key j
        is position pos - held + j, so query i sits at held + i), then the newest keys go
        back into the ring. Position p always lives in ring slot p % cap."""
        kc, vc, kpos, cap, sess = self.kc, self.vc, self.kpos, self.slots, self.session
        B, T, H, D = q4.shape
        tk = P.temp("ring_k", kc.shape[:2] + (cap + T, D), kc.dtype)
        tv = P.temp("ring_v", kc.shape[:2] + (cap + T, D), kc.dtype)
        tpos = P.temp("ring_pos", (cap + T,), np.int64)
        probs = P.temp("probs", (T, cap + T), q4.dtype)
        keep = min(T, cap)
        lanes = P.ex.lanes

        def run_blas():
            pos = sess.pos
            held = min(pos, cap)                  # the ring holds positions pos-held..pos-1
            start = (pos - held) % cap
            first = min(held, cap - start)        # from `start` to the ring's end, then wrap
            for src, dst in ((kc, tk), (vc, tv)):
                dst[:, :, :first] = src[:, :, start:start + first]
                dst[:, :, first:held] = src[:, :, :held - first]
            k_attn.kv_write(tk, tv, tpos, k4, v4, pos, held, cap + T)
            k_prefill.attend_blas(out4, q4, tk, tv, held + T, held, m, bias4, causal, window,
                                  scale, probs, PREFILL_BLOCK, lanes)
            k_attn.kv_write(kc, vc, kpos, k4[:, T - keep:], v4[:, T - keep:],
                            pos + T - keep, (pos + T - keep) % cap, cap)
        P.step(run_blas, op="attention", blas=True)
        _defer_blas(P, q4, probs, m, bias4)
        P.deferred(k_attn.kv_write, tk, tv, tpos, k4, v4, 0, 0, cap + T)
        P.deferred(k_attn.kv_write, kc, vc, kpos, k4[:, T - keep:], v4[:, T - keep:], 0, 0,
                   cap)
        return out4.reshape(B, T, H * D)

    def _build_cross(self, P, out4, q4, k4, v4, mask, causal, window, scale):
        # keys/values come from the encoder side, fixed for the whole generation: laid out
        # into the cache on the session's first forward, then only read
        kc, vc, kpos, S, sess = self.kc, self.vc, self.kpos, self.slots, self.session
        B, T, H, D = q4.shape
        if mask is not None:
            m = sess.buffer((P._node.id, "mask"), mask.shape, np.bool_)   # kept across steps
        else:
            m = np.zeros((B, 0), np.bool_)
        bias4 = np.broadcast_to(np.zeros(1, q4.dtype), (B, H, T, 0))
        if T > PREFILL_ROWS:
            probs = P.temp("probs", (T, S), q4.dtype)
            lanes = P.ex.lanes

            def run_blas():
                pos = sess.pos
                if pos == 0:
                    k_attn.kv_write(kc, vc, kpos, k4, v4, 0, 0, S)
                    if mask is not None:
                        np.not_equal(mask, 0, m)
                k_prefill.attend_blas(out4, q4, kc, vc, S, pos, m, bias4, causal, window,
                                      scale, probs, PREFILL_BLOCK, lanes)
            P.step(run_blas, op="attention", blas=True)
            _defer_blas(P, q4, probs, m, bias4)
            P.deferred(k_attn.kv_write, kc, vc, kpos, k4, v4, 0, 0, S)
            return out4.reshape(B, T, H * D)
        scores = P.temp("scores", (B * H, S), np.float64)
        acc = P.temp("acc", (B * H, D), np.float64)

        def run():
            pos = sess.pos
            if pos == 0:
                k_attn.kv_write(kc, vc, kpos, k4, v4, 0, 0, S)
                if mask is not None:
                    np.not_equal(mask, 0, m)
            k_attn.attend(out4, q4, kc, vc, kpos, S, pos, m, bias4, causal, window, scale,
                          scores, acc)
        P.step(run, op="attention")
        P.deferred(k_attn.attend, out4, q4, kc, vc, kpos, S, 0, m, bias4, causal, window,
                   scale, scores, acc)
        P.deferred(k_attn.kv_write, kc, vc, kpos, k4, v4, 0, 0, S)
        return out4.reshape(B, T, H * D)


def _defer_blas(P, q4, probs, m, bias4) -> None:
    # attend_blas's kernels on one block's arguments, compiled with the program's others
    T, S = probs.shape
    p = probs.reshape(T, S)
    P.deferred(k_prefill.softmax_masked, p, 0, m[0, :S] if m.shape[1] else m[0],
               bias4[0, 0, :, :S] if bias4.shape[3] else bias4[0, 0], False, 0, 1.0)


def _slots(node, args) -> tuple[int | None, int | None]:
    """Argument positions of an attention's mask and bias (None: absent)."""
    if node.op == "attention":
        return (3 if len(args) > 3 else None), (4 if len(args) > 4 else None)
    has_mask = bool(node.attrs.get("has_mask"))
    return (3 if has_mask else None), ((3 + has_mask) if node.attrs.get("has_bias") else None)


def _mask_input(g, nid: str) -> str | None:
    """The model input a mask argument is (through casts/reshapes), or None."""
    for _ in range(8):
        node = g.node(nid)
        if node.op == "input":
            return node.attrs["name"]
        if node.op not in MASK_PATH or len(g.args(nid)) != 1:
            return None
        nid = g.args(nid)[0]
    return None


def cached_attentions(ex, ones: tuple[str, ...] = ()) -> list[tuple[str, bool]]:
    """(node, is_cross) for every attention a session caches: causal self-attention over
    the decoded tokens, and cross-attention whose keys come from outside them (an encoder).
    `ones` names inputs the generator fills with ones (padding masks: every token real).
    Raises ArchError naming what stops cached decoding."""
    g = ex.graph
    found = []
    bias_users: dict[str, list[str]] = {}
    for nid in g.topo():
        node = g.node(nid)
        if nid not in ex.dynamic:
            continue
        args = g.args(nid)
        if node.op in POSITIONAL or (node.op == "matmul" and all(a in ex.dynamic for a in args)):
            raise ArchError(f"`{node.op}` mixes positions of the sequence; this model cannot "
                            "decode with a KV cache", node.span)
        if node.op in BIASES:
            if node.op == "relative_position_bias" and not all(a in ex.dynamic
                                                               for a in args[:2]):
                raise ArchError("a relative position bias between the decoded tokens and a "
                                "fixed sequence cannot be cached", node.span)
            bias_users[nid] = []
            continue
        if node.op not in ATTENTION:
            continue
        if not node.attrs.get("cache"):
            raise ArchError("this attention declares no KV cache (cache=false)", node.span,
                            "decoding recomputes the whole sequence for every token")
        mask_at, bias_at = _slots(node, args)
        mask = args[mask_at] if mask_at is not None else None
        bias = args[bias_at] if bias_at is not None else None
        cross = args[1] not in ex.dynamic
        if cross:
            if args[2] in ex.dynamic:
                raise ArchError("cross-attention whose values (not keys) depend on the decoded "
                                "tokens cannot be cached", node.span)
            if bias is not None or node.attrs.get("causal") or node.attrs.get("window"):
                raise ArchError("cached cross-attention with a bias, causal mask or window is "
                                "not supported", node.span)
            if mask is not None and mask in ex.dynamic:
                raise ArchError("a cross-attention mask that depends on the decoded tokens "
                                "cannot be cached", node.span)
            found.append((nid, True))
            continue
        if not node.attrs.get("causal"):
            raise ArchError("this self-attention is not causal: every token sees later ones, "
                            "so earlier tokens change as the sequence grows", node.span,
                            "only causal (decoder) attention decodes with a KV cache")
        if mask is not None and _mask_input(g, mask) not in ones:
            raise ArchError("cached decoding of attention with a mask that is not a padding "
                            "input is not supported", node.span)
        if bias is not None:
            if g.node(bias).op not in BIASES or bias not in ex.dynamic:
                raise ArchError("cached decoding needs a score bias computed from positions "
                                "(relative_position_bias or alibi)", node.span)
            if node.attrs.get("window"):
                raise ArchError("cached decoding of a sliding window with a score bias is not "
                                "supported", node.span)
            bias_users[bias].append(nid)
        found.append((nid, False))
    for nid, users in bias_users.items():
        # the session's bias has the layout (1, H, T, max_seq) only cached attention reads
        uses = {u for u, _ in g.users(nid)}
        if uses != set(users) or any(pos != _slots(g.node(u), g.args(u))[1]
                                     for u, pos in g.users(nid)) \
                or nid in g.outputs.values():
            raise ArchError(f"`{g.node(nid).op}` feeds something other than a cached "
                            "attention's score bias", g.node(nid).span)
    return found


def caveats(ex) -> list[str]:
    """What a cached step computes differently from a full forward, though not wrongly."""
    g = ex.graph
    for nid in ex.dynamic:
        node = g.node(nid)
        if node.op == "moe" and (node.attrs.get("capacity") or node.attrs.get("capacity_factor")):
            return ["expert capacity counts tokens per forward: cached decoding routes each "
                    "new token alone (as Hugging Face's generate does), so it can differ from "
                    "recomputing the sequence (--no-cache)"]
    return []


class Session:
    """One generation: the cache arena for batch B and `max_seq` positions, and `pos`.
    `length` names the size a forward's token count binds (T unless the model says
    otherwise), `dims` binds sizes fixed for the whole generation (an encoder's length), and
    `ones` names the padding-mask inputs the generator fills with ones."""

    def __init__(self, ex, batch: int, max_seq: int, *, length: str = "T",
                 dims: dict[str, int] | None = None, ones: tuple[str, ...] = ()):
        self.ex = ex
        self.length = length
        self.batch = batch
        self.max_seq = max_seq
        self.dims = dict(dims or {})
        self.ones = tuple(ones)
        self.pos = 0
        self.buffers: dict = {}         # per-step biases, outside the programs' arenas
        # the compiler's KV plan for exactly the attentions this session caches; the
        # arena is that plan (executor.kv_arena), and the programs' memory plans see it
        self.kv_plan = ex.toolchain.plan_kv_cache(ex.graph, batch, max_seq,
                                                  {"B": batch, **self.dims},
                                                  select=cached_attentions(ex, self.ones))
        self.arena, views = kv_arena(self.kv_plan)
        self.nbytes = self.arena.nbytes
        self.entries: dict[str, CacheEntry] = {}
        for e in (self.kv_plan.entries if self.kv_plan is not None else []):
            kc, vc, kpos = views[e.node]
            self.entries[e.node] = CacheEntry(kc, vc, kpos, e.kind == "window", self,
                                              e.kind == "cross")
        self.bounded = all(e.ring for e in self.entries.values() if not e.cross)
        self.reset()

    def reset(self) -> None:
        self.pos = 0
        for e in self.entries.values():
            e.kpos.fill(-1)

    def cache_entry(self, P, node, B, Hkv, D, dtype) -> CacheEntry | None:
        return self.entries.get(node.id)

    def buffer(self, key, shape, dtype) -> np.ndarray:
        """An array that lives as long as the session (both build passes share it)."""
        k = (key, tuple(shape), np.dtype(dtype).str)
        if k not in self.buffers:
            self.buffers[k] = np.zeros(shape, dtype)
        return self.buffers[k]

    def forward(self, inputs: dict[str, np.ndarray], bindings: dict[str, int],
                profile=None, *, last_of: str | None = None) -> dict[str, np.ndarray]:
        """Run T new tokens (a prefill, or one decode step) and advance; returns views of
        the outputs, valid until the next call. `last_of` names an output wanted for the
        last new position only (a prompt's logits, when generating): the position-wise
        ops before it then run on that one position (Executor.last_position)."""
        T = bindings[self.length]
        if not self.bounded and self.pos + T > self.max_seq:
            raise ArchError(f"the KV cache holds {self.max_seq} positions; generating past "
                            f"position {self.pos + T} needs a larger --max-seq")
        ex = self.ex
        if last_of is not None and T > 1:
            axis = self._position_axis(last_of)
            if axis is not None:
                ex = ex.last_position(last_of, axis)
        prog = ex.program({**self.dims, **bindings}, self)
        prog.compile(profile)
        prog.execute(inputs, profile)
        self.pos += T
        return prog.output_values()

    def _position_axis(self, output: str) -> int | None:
        # the axis of `output` that the session's length (T) sizes
        g = self.ex.graph
        shape = g.node(g.outputs[output]).shape or ()
        axes = [i for i, d in enumerate(shape) if d == Dim.sym(self.length)]
        return axes[0] if len(axes) == 1 else None


# ---- the position biases of a decoded sequence -------------------------------------------
# In a session the bias of T new queries (positions pos..pos+T-1) against every key
# position 0..L-1 (L = max_seq) is a slice of one table over relative distances
# r = key - query in [lo, hi]: bias[0, h, i, j] = rel[h, j - (pos + i) - lo].

def _relative_table(node, args, L: int, offset: int) -> np.ndarray:
    """(H, hi - lo + 1) bias per relative distance, and lo."""
    lo, hi = -(L - 1) - max(offset, 0), (L - 1) - min(offset, 0)
    rel = np.arange(lo, hi + 1)
    if node.op == "relative_position_bias":
        table = args[2]                                                  # (NB, H)
        b = relative_position_bucket(rel, bool(node.attrs.get("bidirectional", True)),
                                     table.shape[0], node.attrs.get("max_distance", 128))
        return np.ascontiguousarray(table[b].T), lo                     # (H, R)
    slopes = k_attn.alibi_slopes(node.attrs.get("heads", 1))             # (H,)
    # -slope * |query - key|: per visible (causal) row this differs from the reference's
    # -slope * (S - 1 - key) by a constant, which softmax ignores
    return (-slopes[:, None] * np.abs(rel)[None, :]), lo


def _position_bias_steps(op: str):
    plain = STEPS.get(op)

    def build(P, node, args, attrs):
        sess = P.session
        if sess is None or not P.is_dynamic(node.id):
            return plain(P, node, args, attrs) if plain is not None else None
        L = sess.max_seq
        T = args[0].shape[-2]
        offset = int(attrs.get("offset") or 0) if op == "relative_position_bias" else 0
        rel, lo = _relative_table(node, args, L, offset)
        H = rel.shape[0]
        out = sess.buffer(node.id, (1, H, T, L), node.dtype)            # (1, H, T, L)

        def run():
            for i in range(T):
                start = -(sess.pos + offset + i) - lo
                out[0, :, i, :] = rel[:, start:start + L]
        P.step(run, op=op)
        return out
    return build


for _op in BIASES:
    STEPS[_op] = _position_bias_steps(_op)
