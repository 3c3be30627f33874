"""The compiled executor: the optimised graph bound to concrete sizes, run in planned memory.

    ex = Executor(graph, params, threads=2)      # weights arranged once; threads set
    ex.run({"ids": ids})                         # -> {"logits": array}  (a fresh copy)
    prog = ex.program({"B": 1, "T": 1}, session) # a Program: what one forward pass is

A Program is the graph for one set of sizes (B, T, ...): every value that needs memory
gets a slot in one arena (the activation-memory plan), and every op becomes one or more
prebuilt steps `fn(*args)` whose arguments are fixed arrays (arena views, weights, cache
buffers). Running it is `for fn, args in steps: fn(*args)`: nothing is allocated in the
steady state (a decode step reuses its program), and Python dispatch is one call per step.

Memory plan (ours, until the compiler's plan_memory lands): pass 1 builds the steps with
throw-away buffers and records, per buffer, its size and the first and last step that
touches it (views such as reshape/transpose/split extend the life of what they view);
then buffers are packed greedily, largest first, at the lowest offset that does not
overlap any buffer alive at the same time (the idea of ggml's allocator and ONNX Runtime's
memory patterns); pass 2 builds the steps again on views of one arena. Graph outputs live
to the end; inputs are copied in at the start.

Values computable from parameters alone (concatenated QKV / gate-up weights made by the
fusion passes, transposes of weights) are folded once when the executor is made: that is
where weights get their run-time layout.

Op -> steps translations live in runtime/steps.py; an op without one runs its `ref_`
kernel (correct, but it allocates, and `--profile` marks it "(ref)").
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from . import jit
from ..dsl.dims import evaluate
from ..dsl.errors import ArchError
from ..dsl.graph import Graph, Node
from .inputs import bind_inputs
from .kernels import REFERENCE
from .reference import ExecutionError, resolve

ALIGN = 64          # bytes: every buffer starts on a cache line
LEAVES = ("input", "param", "const")


def optimise(g: Graph, warnings: list[str] | None = None) -> Graph:
    """The compiler's pipeline; the graph as written if the pipeline fails (a compiler bug:
    the run still gives right answers, and the warning says so)."""
    from ..compiler.pipeline import run_pipeline
    try:
        # the plans are made here, at run time, for the sizes actually bound
        return run_pipeline(g, skip=("plan_kv_cache", "plan_memory")).graph
    except ArchError:
        raise
    except Exception as e:  # noqa: BLE001
        if warnings is not None:
            warnings.append(f"optimisation skipped (compiler error: {type(e).__name__}: {e})")
        return g


# ---- the arena plan ------------------------------------------------------------------------

@dataclass
class BufferUse:
    nbytes: int
    first: int
    last: int


def plan_arena(buffers: Mapping[Any, BufferUse]) -> tuple[dict[Any, int], int]:
    """Offsets for buffers so that no two alive at once overlap; returns (offsets, size)."""
    placed: list[tuple[int, int, BufferUse]] = []      # (offset, end, use)
    offsets: dict[Any, int] = {}
    for key, use in sorted(buffers.items(), key=lambda kv: (-kv[1].nbytes, kv[1].first)):
        size = -(-max(use.nbytes, 1) // ALIGN) * ALIGN
        busy = sorted((o, e) for o, e, u in placed
                      if not (u.last < use.first or use.last < u.first))
        off = 0
        for o, e in busy:
            if off + size <= o:
                break
            off = max(off, e)
        offsets[key] = off
        placed.append((off, off + size, use))
    return offsets, max((e for _, e, _ in placed), default=0)


class _Recorder:
    """Pass 1: hand out scratch arrays and remember each buffer's size and lifetime."""

    def __init__(self):
        self.uses: dict[Any, BufferUse] = {}

    def buffer(self, key, shape, dtype, idx: int) -> np.ndarray:
        arr = np.empty(shape, dtype)
        self.uses[key] = BufferUse(arr.nbytes, idx, idx)
        return arr

    def touch(self, keys, idx: int) -> None:
        for k in keys:
            u = self.uses[k]
            u.last = max(u.last, idx)


class _ArenaAlloc:
    """Pass 2: the same buffers, as views of one arena at the planned offsets."""

    def __init__(self, arena: np.ndarray, offsets: dict[Any, int]):
        self.arena, self.offsets = arena, offsets

    def buffer(self, key, shape, dtype, idx: int) -> np.ndarray:
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        off = self.offsets[key]
        return np.ndarray(shape, dt, buffer=self.arena[off:off + n]) if n else np.empty(shape, dt)

    def touch(self, keys, idx: int) -> None:
        pass


# ---- a program -------------------------------------------------------------------------------

@dataclass
class Step:
    fn: Callable
    args: tuple
    op: str          # for the profile: the graph op this step belongs to
    first: bool = True   # the first step of its node (a profile "call")
    node: str = ""


@dataclass
class Profile:
    """Per-op timings of executed steps, with compile time kept apart."""
    calls: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    compile_seconds: float = 0.0
    runs: int = 0

    def add(self, op: str, dt: float, call: bool = True) -> None:
        self.calls[op] = self.calls.get(op, 0) + int(call)
        self.seconds[op] = self.seconds.get(op, 0.0) + dt

    def table(self) -> str:
        total = sum(self.seconds.values()) or 1e-12
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        out = [f"{'op':<24} {'calls':>7} {'total ms':>10} {'share':>7}"]
        for op, s in rows:
            out.append(f"{op:<24} {self.calls[op]:>7} {s * 1e3:>10.3f} {s / total:>6.1%}")
        out.append(f"{'total':<24} {sum(self.calls.values()):>7} {total * 1e3:>10.3f} "
                   f"{1:>6.0%}")
        out.append(f"compile (or load from the kernel cache): {self.compile_seconds:.3f} s"
                   f"; {self.runs} run{'s' if self.runs != 1 else ''} timed")
        return "\n".join(out)


class Program:
    """The graph at fixed sizes: planned buffers and prebuilt steps."""

    def __init__(self, ex: "Executor", bindings: Mapping[str, int], session=None):
        self.ex = ex
        self.graph = ex.graph
        self.bindings = dict(bindings)
        self.session = session
        self.order = [n for n in self.graph.topo() if n not in ex.folded]
        rec = _Recorder()
        self._build(rec)
        offsets, size = plan_arena(rec.uses)
        self.arena_bytes = size
        self.naive_bytes = sum(u.nbytes for u in rec.uses.values())
        self.arena = np.empty(size, np.uint8)
        self._build(_ArenaAlloc(self.arena, offsets))
        self.compiled = False

    # ----- what step builders (runtime/steps.py) use
    def shape(self, node: Node | str, part: int | None = None) -> tuple[int, ...]:
        node = self.graph.node(node) if isinstance(node, str) else node
        shape = node.parts[part][0] if part is not None else node.shape
        return tuple(evaluate(d, self.bindings) for d in shape)

    def output(self, part: int | None = None) -> np.ndarray:
        """The buffer of the node being built (or of one part of a tuple node)."""
        node = self._node
        key = (node.id, part)
        dtype = node.parts[part][1] if part is not None else node.dtype
        arr = self._alloc.buffer(key, self.shape(node, part), dtype, self._idx)
        self._owned.add(key)
        return arr

    def temp(self, tag: str, shape, dtype) -> np.ndarray:
        """Scratch used only by this node's steps."""
        return self._alloc.buffer((self._node.id, "tmp", tag), tuple(shape), dtype, self._idx)

    def step(self, fn: Callable, *args, op: str | None = None) -> None:
        first = not self.steps or self.steps[-1].node != self._node.id
        self.steps.append(Step(fn, args, op or self._node.op, first, self._node.id))

    def deferred(self, fn: Callable, *args) -> None:
        """A kernel that a step calls indirectly: compiled up front by `compile`."""
        self._deferred_compiles.append((fn, args))

    def contiguous(self, arr: np.ndarray, tag: str = "c") -> np.ndarray:
        """`arr` itself when C-contiguous, else a scratch copy refreshed by a step."""
        if arr.flags.c_contiguous:
            return arr
        buf = self.temp(tag, arr.shape, arr.dtype)
        self.step(np.copyto, buf, arr)
        return buf

    def is_dynamic(self, nid: str) -> bool:
        """Does this value depend on the model inputs (not only on weights)?"""
        return nid in self.ex.dynamic

    # ----- building
    def _build(self, alloc) -> None:
        from .steps import STEPS, build_reference
        g = self.graph
        self._alloc = alloc
        self.steps: list[Step] = []
        self._deferred_compiles: list = []
        self.values: dict[str, Any] = {}
        self.input_buffers: dict[str, np.ndarray] = {}
        owners: dict[str, set] = {}
        for idx, nid in enumerate(self.order):
            node = g.node(nid)
            self._idx, self._node, self._owned = idx, node, set()
            args = g.args(nid)
            for a in args:
                alloc.touch(owners.get(a, ()), idx)
            if node.op == "input":
                buf = self.output()
                self.input_buffers[node.attrs["name"]] = buf
                value = buf
            elif node.op == "param":
                value = self.ex.weights[node.attrs["name"]]
            elif node.op == "const":
                value = np.asarray(node.attrs["value"])
            elif nid in self.ex.folded_values:
                value = self.ex.folded_values[nid]
            else:
                vals = [self.ex.folded_values[a] if a in self.ex.folded_values else self.values[a]
                        for a in args]
                attrs = {k: resolve(v, self.bindings) for k, v in node.attrs.items()}
                build = STEPS.get(node.op)
                value = build(self, node, vals, attrs) if build is not None else None
                if value is None:
                    value = build_reference(self, node, vals, attrs)
            self.values[nid] = value
            owners[nid] = set(self._owned) if self._owned else \
                set().union(*(owners.get(a, set()) for a in args)) if args else set()
            alloc.touch(owners[nid], idx)
        end = len(self.order)
        for nid in self.graph.outputs.values():
            alloc.touch(owners.get(nid, ()), end)
        self._alloc = None

    # ----- running
    def compile(self, profile: Profile | None = None) -> None:
        """Compile (or load from the on-disk cache) every Numba kernel the steps call, so
        that compile time is paid, and measured, before the first run."""
        if self.compiled:
            return
        t0 = time.perf_counter()
        from numba.core.registry import CPUDispatcher
        from numba import typeof
        seen = set()
        for s in self.steps:
            if isinstance(s.fn, CPUDispatcher):
                sig = tuple(typeof(a) for a in s.args)
                if (s.fn, sig) not in seen:
                    seen.add((s.fn, sig))
                    s.fn.compile(sig)
        for fn, args in self._deferred_compiles:
            fn.compile(tuple(typeof(a) for a in args))
        self.compiled = True
        if profile is not None:
            profile.compile_seconds += time.perf_counter() - t0

    def execute(self, inputs: Mapping[str, np.ndarray] | None = None,
                profile: Profile | None = None) -> None:
        for name, arr in (inputs or {}).items():
            np.copyto(self.input_buffers[name], arr, casting="unsafe")
        if profile is None:
            for s in self.steps:
                s.fn(*s.args)
            return
        clock = time.perf_counter
        for s in self.steps:
            t = clock()
            s.fn(*s.args)
            profile.add(s.op, clock() - t, s.first)
        profile.runs += 1

    def output_values(self) -> dict[str, np.ndarray]:
        return {name: self.values[nid] for name, nid in self.graph.outputs.items()}


# ---- the executor ----------------------------------------------------------------------------

class Executor:
    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray], *,
                 optimize: bool = True, threads: int | None = None):
        self.source_graph = graph
        self.warnings: list[str] = []
        self.graph = optimise(graph, self.warnings) if optimize else graph
        self.threads = jit.set_threads(threads)
        self.weights = {n.attrs["name"]: np.ascontiguousarray(params[n.attrs["name"]],
                                                              dtype=n.dtype)
                        for n in self.graph.params()}
        self.dynamic = self._dynamic_nodes()
        self.folded_values = self._fold()
        self.folded = {n for n in self.folded_values
                       if all(u in self.folded_values for u, _ in self.graph.users(n))
                       and n not in self.graph.outputs.values()}
        self._programs: dict[Any, Program] = {}

    def _dynamic_nodes(self) -> set[str]:
        g = self.graph
        dyn: set[str] = set()
        for nid in g.topo():
            if g.node(nid).op == "input" or any(a in dyn for a in g.args(nid)):
                dyn.add(nid)
        return dyn

    def _fold(self) -> dict[str, np.ndarray]:
        """Evaluate once every op whose inputs are weights or constants (weight layouts)."""
        g = self.graph
        values: dict[str, np.ndarray] = {}
        for nid in g.topo():
            node = g.node(nid)
            if nid in self.dynamic:
                continue
            if node.op == "param":
                values[nid] = self.weights[node.attrs["name"]]
            elif node.op == "const":
                values[nid] = np.asarray(node.attrs["value"])
            elif node.op in REFERENCE and node.dtype != "tuple" \
                    and all(a in values for a in g.args(nid)) and _concrete(node):
                attrs = dict(node.attrs)
                out = REFERENCE[node.op](*[values[a] for a in g.args(nid)], **attrs)
                values[nid] = np.ascontiguousarray(out)
        # leaves stay leaves; only computed values count as folded
        return {n: v for n, v in values.items() if g.node(n).op not in LEAVES}

    def program(self, bindings: Mapping[str, int], session=None) -> Program:
        key = (tuple(sorted(bindings.items())), id(session))
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = Program(self, bindings, session)
        return prog

    def run(self, inputs: Mapping[str, np.ndarray], *, bindings: Mapping[str, int] | None = None,
            profile: Profile | None = None) -> dict[str, np.ndarray]:
        arrays, found, _ = bind_inputs(self.graph, dict(inputs))
        prog = self.program({**found, **(bindings or {})})
        prog.compile(profile)
        prog.execute(arrays, profile)
        return {k: np.array(v) for k, v in prog.output_values().items()}


def _concrete(node: Node) -> bool:
    return node.shape is not None and all(isinstance(d, int) for d in node.shape)


def run_compiled(g: Graph, inputs: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
                 **options) -> dict[str, np.ndarray]:
    """One-shot convenience: build an Executor and run it once."""
    return Executor(g, params, **options).run(inputs)


__all__ = ["Executor", "Program", "Profile", "ExecutionError", "plan_arena", "run_compiled"]
