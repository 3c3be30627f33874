"""plan_memory: give every intermediate value an (offset, nbytes) slot in one activation
arena, sharing memory between values whose lifetimes do not overlap.

    values (topological order)       lifetimes         arena
    a = layernorm(x)   step 0        a: 0..1           [ a | b ]      peak 2 buffers,
    b = linear(a)      step 1        b: 1..2           [ c | b ]      not 3
    c = gelu(b)        step 2  in place over b (b dies at 2, same size): c takes b's slot
    d = linear(c)      step 3        ...

How (the scheme of ggml's graph allocator and ONNX Runtime's memory pattern planner):
  1. Bind sizes: symbolic dims are evaluated with `dims` (default B = `batch` and every
     other symbol = `max_seq` or the model's context length, see
     plan_kv_cache.context_length, or 1 when neither is known).
  2. Liveness: a value is born at its node's step and dies after its last consumer.
     getitem parts are born with their multi-output node. `reshape` is a view of its
     input (one buffer, the lifetime of both).
  3. In place: an element-wise op, or part 0 (the sum) of add_layernorm/add_rmsnorm,
     whose argument dies at this op and has the same byte size writes over it.
  4. Allocate in order, first fit in a free list that merges neighbours; buffers whose
     last use is this step are freed after the step's outputs are placed. Offsets are
     aligned to `ALIGN` bytes.

Outside the arena: model inputs, parameters and parameter-derived values (loaded once),
graph outputs (handed to the caller), and the KV cache (plan_kv_cache's arena).

The plan (graph.meta["memory_plan"], a `MemoryPlan`) is what a runtime needs:
`slots[node id] = (offset, nbytes)` for each value with storage (a part of a multi-output
node that nothing reads gets a scratch slot keyed `<node id>.<index>`), `views[node id] = node id`
for reshapes that share their input's slot, `inplace[node id] = node id` when a value
took over its argument's slot, `arena_bytes` to allocate, and `bindings` the sizes it
was planned for. Requires: concrete sizes after binding. Ensures: the graph is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ...dsl.dims import evaluate
from ...dsl.graph import Graph
from ...dsl.ops import OPS
from ..ir import PassResult, param_derived

ALIGN = 64
INPLACE_FUSED = ("add_layernorm", "add_rmsnorm")


@dataclass
class MemoryPlan:
    bindings: dict[str, int]
    arena_bytes: int = 0
    naive_bytes: int = 0
    slots: dict[str, tuple[int, int]] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    inplace: dict[str, str] = field(default_factory=dict)
    lifetimes: dict[str, tuple[int, int]] = field(default_factory=dict)   # slot owner -> steps
    outside: dict[str, str] = field(default_factory=dict)                # node -> why

    def summary(self) -> str:
        saved = self.naive_bytes - self.arena_bytes
        pct = f" ({100 * saved / self.naive_bytes:.0f}% less)" if self.naive_bytes else ""
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(self.bindings.items()))
        return (f"activation arena: planned peak {fmt_bytes(self.arena_bytes)} vs naive sum "
                f"{fmt_bytes(self.naive_bytes)}{pct}; {len(self.slots)} buffers, "
                f"{len(self.inplace)} in place, {len(self.views)} views"
                + (f"  [{sizes}]" if sizes else ""))


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit} ({n:,} B)"
    return f"{n:,} B"


def nbytes(shape, dtype: str, bindings: Mapping[str, int]) -> int:
    n = 1
    for d in shape:
        n *= evaluate(d, bindings)
    return n * np.dtype(dtype).itemsize


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class _FreeList:
    """First-fit allocation in one growing arena; freed blocks merge with neighbours."""

    def __init__(self):
        self.free: list[tuple[int, int]] = []   # (offset, size), sorted by offset
        self.end = 0

    def alloc(self, size: int) -> int:
        size = _align(max(size, 1))
        for i, (off, sz) in enumerate(self.free):
            if sz >= size:
                if sz == size:
                    self.free.pop(i)
                else:
                    self.free[i] = (off + size, sz - size)
                return off
        if self.free and self.free[-1][0] + self.free[-1][1] == self.end:
            off = self.free.pop()[0]        # grow the trailing free block
        else:
            off = self.end
        self.end = off + size
        return off

    def release(self, off: int, size: int) -> None:
        size = _align(max(size, 1))
        self.free.append((off, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for o, s in self.free:
            if merged and merged[-1][0] + merged[-1][1] == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((o, s))
        self.free = merged


def default_bindings(g: Graph, dims: Mapping[str, int] | None, batch: int = 1,
                     max_seq: int | None = None) -> dict[str, int]:
    from .plan_kv_cache import context_length
    symbols: set[str] = set()
    for node in g.nodes():
        for shape in ([node.shape] if node.shape is not None else [s for s, _ in node.parts]):
            for d in shape:
                if not isinstance(d, int):
                    symbols |= d.symbols()
    ctx = max_seq or context_length(g)[0] or 1
    out = {s: (batch if s == "B" else ctx) for s in symbols}
    out.update(dims or {})
    return out


def plan(g: Graph, dims: Mapping[str, int] | None = None, batch: int = 1,
         max_seq: int | None = None) -> MemoryPlan:
    bindings = default_bindings(g, dims, batch, max_seq)
    mp = MemoryPlan(dict(sorted(bindings.items())))
    order = g.topo()
    step = {n: i for i, n in enumerate(order)}
    pd = param_derived(g)
    outputs = set(g.outputs.values())

    owner: dict[str, str] = {}          # value -> the value whose slot it uses
    size: dict[str, int] = {}
    born: dict[str, int] = {}
    last: dict[str, int] = {}
    for nid in order:
        node = g.node(nid)
        if node.op in ("input", "param", "const") or nid in pd:
            mp.outside[nid] = "parameter" if nid in pd and node.op != "input" else node.op
            continue
        if nid in outputs:
            mp.outside[nid] = "output"
            continue
        if node.dtype == "tuple":
            # its parts (getitem nodes) hold the storage; a part nobody reads still needs a
            # scratch slot for the kernel to write, keyed like its getitem would be
            read = {g.node(u).attrs.get("index") for u, _ in g.users(nid)}
            for i, (shape, dtype) in enumerate(node.parts):
                if i not in read:
                    key = f"{nid}.{i}"
                    born[key] = last[key] = step[nid]
                    size[key] = nbytes(shape, dtype, bindings)
                    owner[key] = key
            continue
        src = g.args(nid)[0] if node.op == "getitem" else None
        born[nid] = step[src] if src else step[nid]
        size[nid] = nbytes(node.shape, node.dtype, bindings)
        uses = [step[u] for u, _ in g.users(nid)]
        last[nid] = max(uses, default=born[nid])
        owner[nid] = nid
        arg = g.args(nid)[0] if node.op == "reshape" else None
        if arg is not None and arg in owner:
            root = owner[arg]
            owner[nid] = root
            mp.views[nid] = arg
            last[root] = max(last[root], last[nid])

    # in place: a value takes over an argument's slot when that argument dies right here
    for nid in order:
        if nid not in owner or owner[nid] != nid:
            continue
        node = g.node(nid)
        cands: list[str] = []
        if node.op != "getitem" and "elementwise" in OPS[node.op].kinds:
            cands = g.args(nid)
        elif node.op == "getitem" and node.attrs.get("index") == 0 and \
                g.node(g.args(nid)[0]).op in INPLACE_FUSED:
            cands = g.args(g.args(nid)[0])[:1]
        for a in cands:
            if a not in owner:
                continue
            root = owner[a]
            if last[root] != born[nid] or size[root] != size[nid]:
                continue
            if g.node(a).dtype != node.dtype:
                continue
            owner[nid] = root
            mp.inplace[nid] = a
            last[root] = max(last[root], last[nid])   # chains: the next op may take it again
            break

    roots = [n for n in owner if owner[n] == n]
    mp.naive_bytes = sum(_align(size[n]) for n in owner if n not in mp.views)
    by_birth: dict[int, list[str]] = {}
    by_death: dict[int, list[str]] = {}
    for r in roots:
        by_birth.setdefault(born[r], []).append(r)
        by_death.setdefault(last[r], []).append(r)
    fl = _FreeList()
    offset: dict[str, int] = {}
    for i in range(len(order)):
        for r in by_birth.get(i, []):
            offset[r] = fl.alloc(size[r])
        for r in by_death.get(i, []):
            fl.release(offset[r], size[r])
    mp.arena_bytes = fl.end
    for n, r in owner.items():
        mp.slots[n] = (offset[r], size[n])
    mp.lifetimes = {r: (born[r], last[r]) for r in roots}
    return mp


def overlaps(mp: MemoryPlan) -> list[tuple[str, str]]:
    """Pairs of slot owners alive at the same step whose bytes overlap (must be empty)."""
    roots = sorted(mp.lifetimes)
    bad = []
    for i, a in enumerate(roots):
        (oa, sa), (ba, la) = mp.slots[a], mp.lifetimes[a]
        for b in roots[i + 1:]:
            (ob, sb), (bb, lb) = mp.slots[b], mp.lifetimes[b]
            if ba <= lb and bb <= la and oa < ob + max(sb, 1) and ob < oa + max(sa, 1):
                bad.append((a, b))
    return bad


def plan_memory(g: Graph, dims: Mapping[str, int] | None = None, batch: int = 1,
                max_seq: int | None = None) -> PassResult:
    out = g.copy()
    mp = plan(out, dims, batch, max_seq)
    out.meta["memory_plan"] = mp
    stats = {"buffers": len(mp.slots), "in place": len(mp.inplace), "views": len(mp.views)}
    return PassResult(out, False, stats, notes=[mp.summary()])
