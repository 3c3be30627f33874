"""The compiled executor: the optimised graph bound to concrete sizes, run in planned memory.

    ex = archc.api.executor(graph, params, threads=2)  # Executor(..., toolchain=COMPILER)
    ex.run({"ids": ids})                         # -> {"logits": array}  (a fresh copy)
    prog = ex.program({"B": 1, "T": 1}, session) # a Program: what one forward pass is

A Program is the graph for one set of sizes (B, T, ...): every value that needs memory
gets a slot in one arena (the activation-memory plan), and every op becomes one or more
prebuilt steps `fn(*args)` whose arguments are fixed arrays (arena views, weights, cache
buffers). Running it is `for fn, args in steps: fn(*args)`: nothing is allocated in the
steady state (a decode step reuses its program), and Python dispatch is one call per step.

Memory: the compiler's plan for the bound sizes (asked of the toolchain the executor was
given, runtime/toolchain.py; the runtime never imports the compiler) says where
every value and every kernel's scratch lives in one arena (`slots`), which values are
views of others, and which write in place over a dying argument; the program allocates
that arena (`plan.arena_bytes`, exactly) plus one buffer per model input and output,
and builds its steps on views of them. A decoding session's programs are planned with
the session's KV plan, so cached attentions get the scratch of cached decoding. A buffer
a step builder asks for that the plan does not hold is an error for scratch (`temp`); an
output the plan does not hold is allocated on its own and counted in `Program.unplanned`
(tests keep it empty).

Values computable from parameters alone (concatenated QKV / gate-up weights made by the
fusion passes, transposes of weights) are folded once when the executor is made: that is
where weights get their run-time layout. Packed weights (int8, bf16: runtime/packed.py)
arrive packed from loading, or are packed here with `weights_dtype=`; they fold as packed
(a concatenation stacks their rows, a transpose is a view) and their steps read them so.

Op -> steps translations live in runtime/steps/, one builder per op (an op without one
is an error); a builder may answer `fallback(why)` for a case it does not compile: the
op's `ref_` kernel runs (correct, but it allocates), said once on stderr, listed in
`Program.fallbacks` and marked "(ref)" by `--profile`.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from . import jit
from ..dsl import progress
from ..dsl.dims import evaluate
from ..dsl.graph import Graph, Node
from ..dsl.ops import OPS, trait
from .budget import plan_lanes
from .inputs import bind_inputs
from .kernels import REFERENCE
from .kernels._quant import pack_weight
from .lanes import Lanes
from .packed import concat_outputs, is_packed, packing_plan, weights_dtype_of
from .reference import ExecutionError, resolve
from .toolchain import Toolchain

LEAVES = ("input", "param", "const")


# ---- a program -------------------------------------------------------------------------------

@dataclass
class Step:
    fn: Callable
    args: tuple
    op: str          # for the profile: the graph op this step belongs to
    first: bool = True   # the first step of its node (a profile "call")
    node: str = ""
    blas: bool = False   # calls BLAS (the thread policy, runtime/jit.py, needs to know)


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
        self.plan = ex.toolchain.plan_memory(self.graph, self.bindings,
                                             kv=getattr(session, "kv_plan", None),
                                             lanes=plan_lanes())
        self.arena_bytes = self.plan.arena_bytes
        self.naive_bytes = self.plan.naive_bytes
        self.arena = np.empty(self.arena_bytes, np.uint8)
        self.unplanned: dict[Any, int] = {}          # key -> bytes allocated off the plan
        self.scratch_taken: set[str] = set()         # planned scratch the builders took
        self.fallbacks: dict[str, str] = {}          # node -> why it runs on its reference
        self._build()
        self.compiled = False
        # thread policy (runtime/jit.py): a program with BLAS products or lanes leaves the
        # cores to them and runs its Numba kernels on one thread (in lane 0 as in the
        # helpers: a parallel kernel there would start a second team on cores the lanes
        # hold); one with neither (a decode step) gives them to Numba
        self.uses_blas = any(s.blas for s in self.steps)
        self.uses_lanes = ex.lanes is not None and any(ex.lanes.is_lane_step(s.fn)
                                                       for s in self.steps)
        self.numba_threads = jit.numba_threads(ex.threads, self.uses_blas or self.uses_lanes)
        self.blas_threads = 1 if ex.lanes is not None else ex.threads
        # a program of parallel Numba kernels alone (a decode step) is re-timed as it runs,
        # so a busy core sends it to one thread (runtime/jit.py Pacer)
        self.pacer = jit.Pacer(self.numba_threads)

    # ----- what step builders (runtime/steps/) use
    def shape(self, node: Node | str, part: int | None = None) -> tuple[int, ...]:
        node = self.graph.node(node) if isinstance(node, str) else node
        shape = node.parts[part][0] if part is not None else node.shape
        return tuple(evaluate(d, self.bindings) for d in shape)

    def output(self, part: int | None = None) -> np.ndarray:
        """The buffer of the node being built (or of one part of a tuple node)."""
        node = self._node
        if part is None:
            key, dtype = node.id, node.dtype
        else:
            parts = self.plan.parts.get(node.id)
            key = parts[part] if parts else f"{node.id}.{part}"
            dtype = node.parts[part][1]
        if key in self.output_buffers:
            return self.output_buffers[key]
        return self._slot(key, self.shape(node, part), dtype)

    def temp(self, tag: str, shape, dtype) -> np.ndarray:
        """Scratch used only by this node's steps, as the op's scratch rule declared it
        (dsl/scratch.py) and the memory plan placed it. A tag the rule did not declare, or
        a buffer bigger than it declared, is an error: the rule and the kernel disagree."""
        key = f"{self._node.id}#{tag}"
        shape = tuple(int(d) for d in shape)
        need = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        got = self.plan.slots.get(key)
        if got is None or got[1] < need:
            planned = "not planned" if got is None else f"planned {got[1]} bytes"
            raise ExecutionError(
                f"op {self._node.op!r} ({self._node.id}) asks for scratch {tag!r} "
                f"{shape} {np.dtype(dtype).name} ({need} bytes), {planned}: its scratch "
                f"rule (dsl/ops/{OPS[self._node.op].family}.py) and its step builder "
                "disagree")
        self.scratch_taken.add(key)
        return np.ndarray(shape, np.dtype(dtype), buffer=self.arena, offset=got[0])

    def unused_scratch(self) -> set[str]:
        """Scratch the plan placed that no step builder took (a rule asking too much)."""
        return {k for k in self.plan.slots if "#" in k} - self.scratch_taken

    def planned_view(self, node: Node) -> bool:
        """Does the memory plan make this node a view of its argument (no storage)?"""
        return node.id in self.plan.views

    def step(self, fn: Callable, *args, op: str | None = None, blas: bool = False) -> None:
        """Append fn(*args); blas=True for a Python step that calls BLAS inside (np.dot and
        np.matmul themselves are recognised, and a function with `calls_blas` set)."""
        first = not self.steps or self.steps[-1].node != self._node.id
        blas = blas or _calls_blas(fn)
        self.steps.append(Step(fn, args, op or self._node.op, first, self._node.id, blas))

    @property
    def plan_lanes(self) -> int:
        """How many of each per-lane scratch buffer the plan holds (dsl/scratch.py LANES):
        one per core, whatever this run's thread count, so one plan serves every run and
        `archc dump` shows it."""
        return self.plan.lanes

    @property
    def n_lanes(self) -> int:
        """How many lanes a step may be cut into (runtime/lanes.py); 1: no lanes."""
        return self.ex.lanes.n if self.ex.lanes is not None else 1

    def column_items(self, n_cols: int, flops: float) -> list[tuple[int, int]]:
        """[c0, c1) of the items a product's columns are cut into for `shared_step` (one
        range when there are no lanes or the product is too small to share)."""
        if self.ex.lanes is None:
            return [(0, n_cols)]
        return self.ex.lanes.column_items(n_cols, flops)

    def row_lanes(self, n_rows: int, elements: int) -> list[tuple[int, int]]:
        if self.ex.lanes is None:
            return [(0, n_rows)]
        return self.ex.lanes.row_ranges(n_rows, elements)

    def lane_step(self, per_lane, op: str | None = None) -> None:
        """Append a step that runs per_lane[k] (a list of (fn, args) calls) on lane k, all
        lanes at once. One lane's calls become plain steps."""
        self._fork_join(self.ex.lanes.run if self.ex.lanes else None, per_lane, (), op)

    def shared_step(self, items, op: str | None = None) -> None:
        """Append a step that runs the items (each a list of (fn, args) calls, independent
        of the others) on every lane at once, each lane taking the next item as it
        finishes one (Lanes.run_shared). One item becomes plain steps."""
        # the step's own counter of items taken: made once here, reset by each run
        self._fork_join(self.ex.lanes.run_shared if self.ex.lanes else None, items,
                        (np.zeros(1, np.int64),), op)

    def _fork_join(self, run, groups, extra: tuple, op: str | None) -> None:
        # one step run(groups, *extra) over groups of calls (its Numba kernels compiled up
        # front, BLAS said); one group, or no lanes, as plain steps
        from numba.core.registry import CPUDispatcher
        groups = tuple(tuple(calls) for calls in groups if calls)
        if len(groups) <= 1 or run is None:
            for calls in groups:
                for fn, args in calls:
                    self.step(fn, *args, op=op)
            return
        for calls in groups:
            for fn, args in calls:
                if isinstance(fn, CPUDispatcher):
                    self.deferred(fn, *args)
        blas = any(_calls_blas(fn) for calls in groups for fn, _ in calls)
        self.step(run, groups, *extra, op=op, blas=blas)

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
    def _slot(self, key, shape: tuple[int, ...], dtype) -> np.ndarray:
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        got = self.plan.slots.get(key)
        if got is None or got[1] < n:
            self.unplanned[key] = n
            return np.empty(shape, dt)
        return np.ndarray(shape, dt, buffer=self.arena, offset=got[0])

    def _build(self) -> None:
        from .steps import STEPS, Fallback, build_reference
        g = self.graph
        self.steps: list[Step] = []
        self._deferred_compiles: list = []
        self.values: dict[str, Any] = {}
        self.input_buffers = {g.node(n).attrs["name"]: np.empty(self.shape(n), g.node(n).dtype)
                              for n in g.inputs}
        self.output_buffers = {n: np.empty(self.shape(n), g.node(n).dtype)
                               for n in set(g.outputs.values())}
        for nid in self.order:
            node = g.node(nid)
            self._node = node
            args = g.args(nid)
            if node.op == "input":
                value = self.input_buffers[node.attrs["name"]]
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
                if build is None:       # never a silent fallback: every op declares steps
                    raise ExecutionError(f"op {node.op!r} ({nid}) has no compiled steps: "
                                         "add a builder with @steps_for in runtime/steps/")
                value = build(self, node, vals, attrs)
                if isinstance(value, Fallback):     # a case the builder does not compile
                    self.fallbacks[nid] = value.reason
                    say_fallback(node, value.reason)
                    value = build_reference(self, node, vals, attrs)
            out = self.output_buffers.get(nid)
            if out is not None and value is not out:
                # an output that is a view, an input or a weight: copied into its buffer
                self.step(np.copyto, out, value, op="copy")
                value = out
            self.values[nid] = value
        self._node = None

    # ----- running
    # seconds every program of the process has spent compiling (or loading) kernels: what
    # generation subtracts from its timings, so tokens/s never includes compilation
    compile_clock = 0.0

    def compile(self, profile: Profile | None = None) -> None:
        """Compile (or load from the on-disk cache) every Numba kernel the steps call, so
        that compile time is paid, and measured, before the first run."""
        if self.compiled:
            return
        t0 = time.perf_counter()
        from numba.core.registry import CPUDispatcher
        from numba import typeof
        calls = [(s.fn, s.args) for s in self.steps if isinstance(s.fn, CPUDispatcher)]
        kinds = {}
        for fn, args in calls + self._deferred_compiles:
            # a program of many lanes makes thousands of calls of a few kinds: each kind is
            # typed by Numba once (a warm-up only: a call of a kind not compiled here still
            # compiles when it runs)
            key = (fn, tuple(map(_arg_kind, args)))
            if key not in kinds:
                kinds[key] = (fn, tuple(typeof(a) for a in args))
        # kernels not compiled in this process yet: what a cold start waits for
        todo = [(fn, sig) for fn, sig in dict.fromkeys(kinds.values()) if sig not in fn.overloads]
        with progress.task("compiling kernels", total=len(todo)) as task:
            for fn, sig in todo:
                fn.compile(sig)
                task.advance()
        self.compiled = True
        dt = time.perf_counter() - t0
        Program.compile_clock += dt
        if profile is not None:
            profile.compile_seconds += dt

    def execute(self, inputs: Mapping[str, np.ndarray] | None = None,
                profile: Profile | None = None) -> None:
        for name, arr in (inputs or {}).items():
            np.copyto(self.input_buffers[name], arr, casting="unsafe")
        n = self.pacer.threads()
        t0 = time.perf_counter()
        with jit.thread_pools(numba=n, blas=self.blas_threads):
            self._execute(profile)
        self.pacer.record(n, time.perf_counter() - t0)

    def _execute(self, profile: Profile | None) -> None:
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

    def calls(self) -> list[tuple[Callable, tuple]]:
        """Every (fn, args) the program calls, a lane step's calls included (in lane
        order): what tests and profiles look inside steps with."""
        return [c for s in self.steps for c in self.step_calls(s)]

    def step_calls(self, s: Step) -> list[tuple[Callable, tuple]]:
        """The (fn, args) calls a step makes: its lanes' calls or shared items' calls in
        order, else the step itself."""
        if self.ex.lanes is not None and self.ex.lanes.is_lane_step(s.fn):
            return [c for calls in s.args[0] for c in calls]
        return [(s.fn, s.args)]

    def output_values(self) -> dict[str, np.ndarray]:
        return {name: self.values[nid] for name, nid in self.graph.outputs.items()}


def _calls_blas(fn) -> bool:
    """np.dot, np.matmul, or a Python step that says it calls BLAS (`fn.calls_blas`)."""
    return fn is np.dot or fn is np.matmul or getattr(fn, "calls_blas", False)


def _arg_kind(a) -> object:
    """What Numba's type of a kernel argument depends on, found cheaply: an array's dtype,
    rank, layout and writability; a scalar's Python type; anything else itself."""
    if type(a) is np.ndarray:
        f = a.flags
        return a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable
    if type(a) in (int, float, bool):
        return type(a)
    return a if isinstance(a, (str, type(None))) else id(a)


_SAID: set[tuple[str, str]] = set()


def say_fallback(node: Node, reason: str) -> None:
    """Once per process and (op, reason), on stderr: an op runs on its NumPy reference."""
    if (node.op, reason) in _SAID:
        return
    _SAID.add((node.op, reason))
    at = f"{node.span}: " if node.span else ""
    print(f"{at}note: `{node.op}` runs on its NumPy reference here ({reason}): correct, "
          "but slower, and it allocates", file=sys.stderr)


# ---- the KV-cache arena ----------------------------------------------------------------------

def kv_arena(kp) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The compiler's KV plan (compiler/passes/plan_kv_cache.py) made real: one arena of
    exactly `kp.total_bytes`, and per planned attention its K and V (B, H_kv, slots, D)
    and key positions (slots,) as views at the planned offsets."""
    arena = np.empty(kp.total_bytes if kp is not None else 0, np.uint8)
    views = {}
    for e in (kp.entries if kp is not None else []):
        shape = (kp.batch, e.kv_heads, e.slots, e.head_dim)
        views[e.node] = (np.ndarray(shape, e.dtype, buffer=arena, offset=e.k_offset),
                         np.ndarray(shape, e.dtype, buffer=arena, offset=e.v_offset),
                         np.ndarray((e.slots,), np.int64, buffer=arena, offset=e.pos_offset))
    return arena, views


# ---- the executor ----------------------------------------------------------------------------

class Executor:
    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray], *,
                 toolchain: Toolchain, optimize: bool = True, threads: int | None = None,
                 share_params: bool = False, weights_dtype: str | None = None,
                 optimised: tuple[Graph, list[str]] | None = None):
        """Weights read only as matrix-product weights (in, out) are stored output-major
        (Fortran order: the same values, each output's column contiguous), the layout a
        decode step's matrix-vector product streams fastest and BLAS reads as well. With
        `share_params` the new arrays replace the originals in `params` (a dict) as they
        are made, so the process keeps one copy of the weights. `weights_dtype` "int8" or
        "bf16" packs the matrix-product weights (runtime/packed.py) that are not packed
        already. `toolchain` is the compiler (runtime/toolchain.py): archc.api.executor()
        passes it; `optimised` is (graph, warnings) of its pipeline when already run."""
        self.source_graph = graph
        self.toolchain = toolchain
        self.warnings: list[str] = []
        if optimised is not None:
            self.graph, self.warnings = optimised[0], list(optimised[1])
        else:
            self.graph = toolchain.optimise(graph, self.warnings) if optimize else graph
        self.threads = jit.set_threads(threads)
        # more than one core: heavy steps are cut into lanes, one BLAS thread each
        self.lanes = Lanes.shared(self.threads) if self.threads > 1 and jit.lanes_enabled() \
            else None
        with progress.task("preparing weights"):
            self._prepare_weights(params, share_params, weights_dtype)
        self._programs: dict[Any, Program] = {}

    def _prepare_weights(self, params: Mapping[str, np.ndarray], share_params: bool,
                         weights_dtype: str | None) -> None:
        """Weights in their run-time layout (packed as `weights_dtype` says), and the values
        folded from them."""
        self.layout = self._weight_nodes()
        by_name: dict[str, list[str]] = {}
        for n in self.graph.params():
            by_name.setdefault(n.attrs["name"], []).append(n.id)
        weights_dtype = weights_dtype_of(self.graph, weights_dtype)
        packing = packing_plan(self.graph) if weights_dtype != "float32" else {}
        self.weights = {}
        for name, nids in by_name.items():
            dtype = self.graph.node(nids[0]).dtype
            # one at a time, handed back at once: at most one extra matrix in memory (none
            # for a checkpoint's transposed (out, in) matrix: already output-major)
            if is_packed(params[name]):
                w = params[name]                    # packed as it was loaded
            elif name in packing:
                w = pack_weight(np.asarray(params[name], np.float32), weights_dtype,
                                packing[name])
            elif all(nid in self.layout for nid in nids):
                w = np.asfortranarray(params[name], dtype=dtype)
            else:
                w = np.ascontiguousarray(params[name], dtype=dtype)
            self.weights[name] = w
            if share_params and isinstance(params, dict) and params[name] is not w:
                params[name] = w
        self.dynamic = self._dynamic_nodes()
        self.folded_values = self._fold(params if share_params and isinstance(params, dict)
                                        else None)
        self.folded = self._folded_only()

    def _folded_only(self) -> set[str]:
        """Folded values no step reads (only other folded values do)."""
        outputs = set(self.graph.outputs.values())
        return {n for n in self.folded_values
                if all(u in self.folded_values for u, _ in self.graph.users(n))
                and n not in outputs}

    def last_position(self, output: str, axis: int = 1) -> "Executor":
        """This model with `output` computed for the last position along `axis` only (a
        prompt pass's logits; compiler/passes/last_position.py), sharing this executor's
        weights, folded values and lanes. Itself when no op before `output` can be cut
        down that way. Made once per (output, axis)."""
        kept = self.__dict__.setdefault("_last_position", {})
        if (output, axis) not in kept:
            graph, changed = self.toolchain.last_position(self.graph, output, axis)
            kept[output, axis] = self._sibling(graph) if changed else self
        return kept[output, axis]

    def variants(self) -> list["Executor"]:
        """This executor and the ones made from it by `last_position`."""
        return [self] + [e for e in self.__dict__.get("_last_position", {}).values()
                         if e is not self]

    def _sibling(self, graph: Graph) -> "Executor":
        # the rewrite leaves weights and parameter-derived nodes as they were, so their
        # arrays (weights, QKV concatenations, ...) are shared, never made twice
        ex = object.__new__(Executor)
        ex.source_graph, ex.warnings, ex.graph = self.source_graph, self.warnings, graph
        ex.toolchain = self.toolchain
        ex.threads, ex.lanes, ex.weights = self.threads, self.lanes, self.weights
        ex.layout = ex._weight_nodes()
        ex.dynamic = ex._dynamic_nodes()
        ex.folded_values = {n: v for n, v in self.folded_values.items() if n in graph}
        ex.folded = ex._folded_only()
        ex._programs = {}
        return ex

    def _weight_nodes(self) -> set[str]:
        """2-D values read only as matrix-product weights (stored output-major)."""
        g = self.graph
        out = set()
        for nid in g.topo():
            uses = g.users(nid)
            if uses and len(g.node(nid).shape or ()) == 2 and all(
                    pos in trait(g.node(u).op, "weight_args", ()) for u, pos in uses):
                out.add(nid)
        return out

    def _dynamic_nodes(self) -> set[str]:
        g = self.graph
        dyn: set[str] = set()
        for nid in g.topo():
            if g.node(nid).op == "input" or any(a in dyn for a in g.args(nid)):
                dyn.add(nid)
        return dyn

    def _fold(self, params: dict | None = None) -> dict[str, Any]:
        """Evaluate once every op computed from weights and constants alone (weight
        layouts): the values the memory plan keeps outside the arena. A parameter read only
        by folded ops and concatenated into a layout (QKV, gate/up) becomes a view of its
        slice of the concatenation, here and in `params` (shared), as soon as that is made:
        one copy of those weights, and never all of them twice."""
        g = self.graph
        derived = self.toolchain.param_derived(g)
        # parameters no step reads: every node of that name is read only by folded ops
        folded_only: dict[str, bool] = {}
        for n in g.params():
            ok = all(u in derived and g.node(u).op not in LEAVES for u, _ in g.users(n.id))
            folded_only[n.attrs["name"]] = folded_only.get(n.attrs["name"], True) and ok
        values: dict[str, Any] = {}
        for nid in g.topo():
            node = g.node(nid)
            if nid not in derived:
                continue
            if node.op == "param":
                values[nid] = self.weights[node.attrs["name"]]
            elif node.op == "const":
                values[nid] = np.asarray(node.attrs["value"])
            elif node.op == "getitem":
                values[nid] = values[g.args(nid)[0]][node.attrs.get("index", 0)]
            elif node.op == "concat" and all(is_packed(values[a]) for a in g.args(nid)):
                values[nid] = concat_outputs([values[a] for a in g.args(nid)])
                self._share_concatenated(nid, values, folded_only, params)
            elif node.op == "transpose" and is_packed(values[g.args(nid)[0]]):
                values[nid] = values[g.args(nid)[0]].T        # a tied head: the same rows
            elif node.op == "concat" and nid in self.layout:
                # concatenated straight into output-major order: no C-order intermediate
                parts = [values[a] for a in g.args(nid)]
                values[nid] = np.concatenate(
                    parts, axis=node.attrs.get("axis", -1),
                    out=np.empty(tuple(_shape_concat(parts, node.attrs.get("axis", -1))),
                                 np.result_type(*parts), order="F"))
                self._share_concatenated(nid, values, folded_only, params)
            else:
                fn = REFERENCE.get(node.op)
                if fn is None:
                    raise ExecutionError(f"no reference kernel for op {node.op!r} ({nid})")
                out = fn(*[values[a] for a in g.args(nid)], **node.attrs)
                if node.dtype == "tuple":
                    values[nid] = tuple(np.ascontiguousarray(o) for o in out)
                elif nid in self.layout:
                    # a weight's transpose (a tied LM head) is already output-major: no copy
                    values[nid] = np.asfortranarray(out)
                else:
                    values[nid] = np.ascontiguousarray(out)
                if node.op == "concat":
                    self._share_concatenated(nid, values, folded_only, params)
        # leaves stay leaves; only computed values count as folded
        return {n: v for n, v in values.items() if g.node(n).op not in LEAVES}

    def _share_concatenated(self, nid: str, values: dict, folded_only: dict,
                            params: dict | None) -> None:
        g = self.graph
        whole = values[nid]
        ax = g.node(nid).attrs.get("axis", -1) % whole.ndim
        start = 0
        for a in g.args(nid):
            part = values[a]
            stop = start + part.shape[ax]
            node = g.node(a)
            if node.op == "param" and folded_only[node.attrs["name"]] \
                    and part.dtype == whole.dtype and is_packed(part) == is_packed(whole):
                view = whole.rows(start, stop) if is_packed(whole) else \
                    whole[(slice(None),) * ax + (slice(start, stop),)]
                name = node.attrs["name"]
                values[a] = self.weights[name] = view
                if params is not None and name in params:
                    params[name] = view
            start = stop

    def program(self, bindings: Mapping[str, int], session=None) -> Program:
        key = (tuple(sorted(bindings.items())), id(session))
        prog = self._programs.pop(key, None)       # put back last: most recently used
        if prog is None:
            prog = Program(self, bindings, session)
        self._programs[key] = prog
        return prog

    def trim_programs(self, max_bytes: int) -> None:
        """Forget the least recently used programs (one per set of input sizes) until the
        arenas of those kept take at most `max_bytes`; the latest is always kept. For runs
        that meet many sizes (batch inference), which keep the sizes they meet again."""
        total = sum(p.arena_bytes for p in self._programs.values())
        for key in list(self._programs)[:-1]:
            if total <= max_bytes:
                break
            total -= self._programs.pop(key).arena_bytes

    def run(self, inputs: Mapping[str, np.ndarray], *, bindings: Mapping[str, int] | None = None,
            profile: Profile | None = None) -> dict[str, np.ndarray]:
        arrays, found, _ = bind_inputs(self.graph, dict(inputs))
        prog = self.program({**found, **(bindings or {})})
        prog.compile(profile)
        prog.execute(arrays, profile)
        return {k: np.array(v) for k, v in prog.output_values().items()}


def _shape_concat(parts, axis: int) -> list[int]:
    shape = list(parts[0].shape)
    shape[axis % len(shape)] = sum(p.shape[axis % len(shape)] for p in parts)
    return shape


__all__ = ["Executor", "Program", "Profile", "ExecutionError", "kv_arena"]
