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
(runtime/steps/attention.py) write the new keys/values into their entry and attend over
it; `positions` and `rope` count from `session.pos`; the position biases are rebuilt per
step (runtime/steps/position_bias.py). The session runs a prefill (the prompt, T tokens) and then one
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
from ..dsl.ops import trait
from .executor import kv_arena

# What a cached step can compute is asked of the op registry's traits: `mixes_positions`
# (a result that depends on other positions in ways a step cannot recompute: refused),
# `position_bias` (rebuilt per step from positions), `caches_kv` (the attentions a session
# caches), `keeps_mask` (ops a padding mask may pass through to an attention).


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
        if not trait(node.op, "keeps_mask") or len(g.args(nid)) != 1:
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
        if trait(node.op, "mixes_positions") or (node.op == "matmul" and
                                                 all(a in ex.dynamic for a in args)):
            raise ArchError(f"`{node.op}` mixes positions of the sequence; this model cannot "
                            "decode with a KV cache", node.span)
        if trait(node.op, "position_bias"):
            if node.op == "relative_position_bias" and not all(a in ex.dynamic
                                                               for a in args[:2]):
                raise ArchError("a relative position bias between the decoded tokens and a "
                                "fixed sequence cannot be cached", node.span)
            bias_users[nid] = []
            continue
        if not trait(node.op, "caches_kv"):
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
            if not trait(g.node(bias).op, "position_bias") or bias not in ex.dynamic:
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
        prog = self.program(bindings, last_of=last_of)
        prog.compile(profile)
        prog.execute(inputs, profile)
        self.pos += T
        return prog.output_values()

    def program(self, bindings: dict[str, int], *, last_of: str | None = None):
        """The program `forward` runs for these sizes (made once, kept by the executor)."""
        ex = self.ex
        if last_of is not None and bindings[self.length] > 1:
            axis = self._position_axis(last_of)
            if axis is not None:
                ex = ex.last_position(last_of, axis)
        return ex.program({**self.dims, **bindings}, self)

    def _position_axis(self, output: str) -> int | None:
        # the axis of `output` that the session's length (T) sizes
        g = self.ex.graph
        shape = g.node(g.outputs[output]).shape or ()
        axes = [i for i, d in enumerate(shape) if d == Dim.sym(self.length)]
        return axes[0] if len(axes) == 1 else None
