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
     getitem parts are born with their multi-output node.
  3. Views share their source's bytes and extend its life: transpose, slice, take,
     dropout (inference), the parts of split, and reshape of a contiguous value (a
     reshape of a strided view is a copy). Each value gets a layout, as NumPy's flags
     will see it: "C" contiguous, "R" rows (a last-axis slice: (B, T, H*D) still views
     as (B, T, H, D)), "S" other strided.
  4. Scratch: what each op's compiled kernel needs besides its output (the op's scratch
     rule, declared with it in dsl/ops/ (dsl/scratch.py), e.g. attention's float64 scores,
     an FFN's hidden activations, a contiguous copy of a strided argument), born and dead
     at the op's step.
  5. In place: an element-wise op, or the part of a tuple op its `inplace_part` trait
     names (the sum of add_layernorm/add_rmsnorm),
     whose argument dies at this op, is contiguous, covers its whole slot and has the
     same byte size writes over it (unless another argument reads those bytes through a
     different view).
  6. Allocate in order, first fit in a free list that merges neighbours; buffers whose
     last use is this step are freed after the step's outputs are placed. Offsets are
     aligned to `ALIGN` bytes.

Outside the arena: model inputs, parameters and parameter-derived values (loaded once),
graph outputs (handed to the caller; an output that would be a view is copied into its
own buffer), views of those, and the KV cache (plan_kv_cache's arena).

The plan (graph.meta["memory_plan"], a `MemoryPlan`) is what the runtime allocates
(runtime/executor.py runs every value and scratch buffer at these offsets):
`slots[key] = (offset, nbytes)` for each value with storage, each scratch buffer
(keyed `<node id>#<tag>`) and each part of a multi-output node that nothing reads
(keyed `<node id>.<index>`); `parts[node id]` the slot keys of a multi-output node's
parts; `views[node id] = node id` for views (no slot); `inplace[node id] = node id` when
a value took over its argument's slot; `arena_bytes` to allocate; `bindings` the sizes it
was planned for. With `kv` (a decoding session's KVPlan) the cached attentions get the
scratch of cached decoding instead of a transient cache. Requires: concrete sizes after
binding. Ensures: the graph is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ...dsl.dims import evaluate
from ...dsl.graph import Graph
from ...dsl.ops import OPS, trait
from ...dsl.scratch import Arg, Cache, bind_lanes
from ..ir import PassResult, param_derived
from ..sizes import align, context_length, fmt_bytes



@dataclass
class MemoryPlan:
    bindings: dict[str, int]
    lanes: int = 1       # the lanes each LANES-sized scratch buffer is given (dsl/scratch.py)
    arena_bytes: int = 0
    naive_bytes: int = 0
    slots: dict[str, tuple[int, int]] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    parts: dict[str, list[str]] = field(default_factory=dict)   # multi-output node -> slots
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


def nbytes(shape, dtype: str, bindings: Mapping[str, int]) -> int:
    n = 1
    for d in shape:
        n *= evaluate(d, bindings)
    return n * np.dtype(dtype).itemsize


class _FreeList:
    """First-fit allocation in one growing arena; freed blocks merge with neighbours."""

    def __init__(self):
        self.free: list[tuple[int, int]] = []   # (offset, size), sorted by offset
        self.end = 0

    def alloc(self, size: int) -> int:
        size = align(max(size, 1))
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
        size = align(max(size, 1))
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
         max_seq: int | None = None, kv=None, lanes: int = 1) -> MemoryPlan:
    """The memory plan for these sizes; `kv` (a KVPlan) when a decoding session caches
    the attentions it lists, whose scratch then differs (dsl/ops/attention.py
    attention_path); `lanes`: how many of each per-lane scratch buffer (dsl/scratch.py)."""
    bindings = default_bindings(g, dims, batch, max_seq)
    mp = MemoryPlan(dict(sorted(bindings.items())), max(1, int(lanes)))
    order = g.topo()
    step = {n: i for i, n in enumerate(order)}
    pd = param_derived(g)
    outputs = set(g.outputs.values())
    cached = {e.node: Cache(e.slots, e.kind == "window", e.kind == "cross")
              for e in (kv.entries if kv else [])}

    owner: dict[str, str] = {}          # value -> the value whose slot it uses
    size: dict[str, int] = {}
    born: dict[str, int] = {}
    last: dict[str, int] = {}
    layout: dict[str, str] = {}         # "C" contiguous, "R" rows, "S" strided (dsl/scratch.py)
    shapes: dict[str, tuple[int, ...]] = {}

    def bound(shape) -> tuple[int, ...]:
        return tuple(evaluate(d, bindings) for d in shape)

    def storage(key: str, nbytes_: int, at: int, until: int) -> None:
        owner[key], size[key], born[key], last[key] = key, nbytes_, at, until

    for nid in order:
        node = g.node(nid)
        args = g.args(nid)
        if node.shape is not None:
            shapes[nid] = bound(node.shape)
        if node.op in ("input", "param", "const") or nid in pd:
            mp.outside[nid] = "parameter" if nid in pd and node.op != "input" else node.op
            layout[nid] = "C"
            continue
        infos = [Arg(shapes.get(a, ()), g.node(a).dtype, layout.get(a, "C")) for a in args]
        for tag, shape, dtype in OPS[node.op].scratch(node, infos, cached.get(nid)):
            storage(f"{nid}#{tag}", nbytes(bind_lanes(shape, mp.lanes), dtype, {}),
                    step[nid], step[nid])
        if node.dtype == "tuple":
            if trait(node.op, "view"):
                continue            # split: its parts are views of its argument
            # its parts (getitem nodes) hold the storage; a part nobody reads still needs a
            # scratch slot for the kernel to write, keyed like its getitem would be
            parts: list[str | None] = [None] * len(node.parts)
            for u in sorted(u for u, _ in g.users(nid)):
                i = g.node(u).attrs.get("index")
                parts[i] = parts[i] or u
            for i, (shape, dtype) in enumerate(node.parts):
                if parts[i] is None:
                    parts[i] = f"{nid}.{i}"
                    storage(parts[i], nbytes(shape, dtype, bindings), step[nid], step[nid])
            mp.parts[nid] = parts
            continue
        src = _view_source(g, node, mp, layout, shapes)
        if src is not None and nid not in outputs:
            mp.views[nid] = src
            layout[nid] = _view_layout(g, node, layout[src], shapes[src], shapes[nid])
            if src in owner:
                root = owner[owner[src]]
                owner[nid] = root
                last[root] = max([last[root]] + [step[u] for u, _ in g.users(nid)])
            else:
                mp.outside[nid] = "view"        # of an input, parameter or output
            continue
        layout[nid] = "C"
        if nid in outputs:
            mp.outside[nid] = "output"          # the runtime copies a view into it
            continue
        tup = g.args(nid)[0] if node.op == "getitem" else None
        storage(nid, nbytes(node.shape, node.dtype, bindings), step[tup] if tup else step[nid],
                step[nid])
        last[nid] = max([born[nid]] + [step[u] for u, _ in g.users(nid)])

    # in place: a value takes over an argument's slot when that argument dies right here
    for nid in order:
        if nid not in owner or owner[nid] != nid:
            continue
        node = g.node(nid)
        cands: list[str] = []
        if node.op != "getitem" and OPS[node.op].has("elementwise"):
            reads = cands = g.args(nid)
        elif node.op == "getitem":
            tup = g.args(nid)[0]
            part = trait(g.node(tup).op, "inplace_part")       # (part, argument)
            if part is not None and node.attrs.get("index") == part[0]:
                reads = g.args(tup)
                cands = reads[part[1]:part[1] + 1]
        for a in cands:
            if a not in owner:
                continue
            root = owner[a]
            if last[root] != born[nid] or size[root] != size[nid] or layout[a] != "C":
                continue
            if g.node(a).dtype != node.dtype:
                continue
            # another argument reading the same bytes through a different view would
            # see them overwritten
            if any(owner.get(b) == root and (layout[b] != "C" or size[b] != size[root])
                   for b in reads if b != a):
                continue
            owner[nid] = root
            mp.inplace[nid] = a
            last[root] = max(last[root], last[nid])   # chains: the next op may take it again
            break

    roots = [n for n in owner if owner[n] == n]
    mp.naive_bytes = sum(align(size[n]) for n in owner if n not in mp.views)
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
        if n not in mp.views:
            mp.slots[n] = (offset[r], size[n])
    mp.lifetimes = {r: (born[r], last[r]) for r in roots}
    return mp


def _view_source(g: Graph, node, mp: MemoryPlan, layout, shapes) -> str | None:
    """The value `node` is a view of (no storage, no copy), or None."""
    args = g.args(node.id)
    view = trait(node.op, "view")
    if view is True or view == "contiguous" and layout[args[0]] == "C":
        return args[0]           # (a reshape of a strided view is a copy)
    if node.op == "getitem":
        tup = g.node(args[0])
        if trait(tup.op, "view"):
            return g.args(tup.id)[0]
        first = mp.parts.get(tup.id, [])[node.attrs.get("index", 0)]
        if first != node.id:
            return first         # a second getitem of the same part
    return None


def _view_layout(g: Graph, node, src: str, shape: tuple, out: tuple) -> str:
    """Layout of a view (see dsl/scratch.py), as NumPy's flags will see it."""
    if src == "S" or node.op in ("reshape", "dropout") or node.op == "getitem" and \
            not trait(g.node(g.args(node.id)[0]).op, "view"):
        return src
    a = node.attrs
    if node.op == "transpose":
        perm = a.get("perm") or list(range(len(shape) - 2)) + [len(shape) - 1, len(shape) - 2]
        kept = [p for p in perm if shape[p] != 1]
        return src if kept == sorted(kept) else "S"
    if node.op == "take":
        ax = a.get("axis", 0) % len(shape)
        return src if all(d == 1 for d in shape[:ax]) else "S"
    # slice, or a part of split: a range along one axis
    tup = g.node(g.args(node.id)[0]) if node.op == "getitem" else node
    ax = tup.attrs.get("axis", -1 if tup.op == "split" else 0) % len(shape)
    step_ = a.get("step", 1) if node.op == "slice" else 1
    if out[ax] == shape[ax] or (all(d == 1 for d in out[:ax]) and (step_ == 1 or out[ax] <= 1)):
        return src
    if ax == len(shape) - 1 and step_ == 1 and src == "C":
        return "R"
    return "S"


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
                max_seq: int | None = None, lanes: int = 1) -> PassResult:
    out = g.copy()
    mp = plan(out, dims, batch, max_seq, lanes=lanes)
    out.meta["memory_plan"] = mp
    stats = {"buffers": len(mp.slots), "in place": len(mp.inplace), "views": len(mp.views)}
    return PassResult(out, False, stats, notes=[mp.summary()])
