"""The memory budget: refuse a model that would not fit, before allocating anything.

One place estimates what a run needs, so every check (and later plan) agrees:

    parameters    every param's bytes (sizes are always known numbers)
    activations   the compiler's activation arena (graph.meta["memory_plan"].arena_bytes)
                  when planned; else the reference executor's peak of live values, which
                  it frees after their last use (needs the input sizes)
    kv cache      graph.meta["kv_plan"].total_bytes when the compiler planned one; for
                  `generate`, the plan for its batch and --max-seq (check_generate)
    new ids       `generate`'s (batch, --max-new-tokens) int64 result

What is not counted: the interpreter and its libraries (the figures are for the model's
own arrays), and the reference executor's kernel scratch beyond the values themselves:
its element-wise ops and attention work a block at a time (runtime/reference.py,
kernels/attention.py), a fixed ~16 MiB that a small model's plan shows as a larger share.

`check_*` raise an ArchError naming the figure, the limit and what to change. The limit is
`--max-memory` (`8G`, `512M`, `1.5GiB`, bytes), by default DEFAULT_SHARE of the RAM, or
less when the process may not use that much: an address-space limit (`ulimit -v`, what
is left of it after the interpreter and its libraries, with room for the code and thread
stacks not loaded yet) or a cgroup's memory limit (a container). So a run that would not
fit is refused with these figures, not ended by a MemoryError half way.
"""
from __future__ import annotations

import os
import re
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..dsl.dims import evaluate
from ..dsl.errors import ArchError
from ..dsl.graph import Graph

DEFAULT_SHARE = 0.8
# binary units whatever the spelling, as `archc dump --max-memory` reads them
UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
         "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
         "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


@dataclass
class Estimate:
    parameters: int
    activations: int | None = None   # None: depends on sizes not known yet
    kv_cache: int = 0
    new_ids: int = 0
    kept_logits: int = 0             # generate's --output-logits: every step's logits

    @property
    def total(self) -> int:
        return self.parameters + (self.activations or 0) + self.kv_cache + self.new_ids \
            + self.kept_logits

    def describe(self) -> str:
        parts = [f"parameters {fmt(self.parameters)}"]
        if self.activations is not None:
            parts.append(f"activations {fmt(self.activations)}")
        if self.kv_cache:
            parts.append(f"KV cache {fmt(self.kv_cache)}")
        if self.new_ids >= 1 << 20:       # said when it matters, not "16 B"
            parts.append(f"new token ids {fmt(self.new_ids)}")
        if self.kept_logits:
            parts.append(f"kept logits {fmt(self.kept_logits)}")
        return " + ".join(parts)


def fmt(n: int) -> str:
    if n >= 1 << 60:              # a size from a hostile config: no float holds it
        return "more than 1,000,000 TiB"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class Limit(int):
    """A memory limit in bytes that knows where it comes from (and what raises it), for
    messages."""
    why = "--max-memory"
    knob = "--max-memory"

    def named(self, why: str, knob: str = "--max-memory") -> "Limit":
        out = Limit(self)
        out.why, out.knob = why, knob
        return out


# what the process maps beyond the arrays as it goes on (measured: 230 MB once Numba, LLVM
# and the kernels are loaded), and a stack for each thread (8 MiB of address space each)
CODE_RESERVE = 256 << 20
STACK_RESERVE = 8 << 20


def address_space_room() -> int | None:
    """Bytes of address space left under `ulimit -v`, None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                used = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    reserve = CODE_RESERVE + STACK_RESERVE * (os.cpu_count() or 1)
    return max(0, soft - used - reserve)


def cgroup_memory() -> int | None:
    """The memory limit of this process's cgroup (v2 or v1), None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:     # v1 writes a huge number for none
            return int(text)
    return None


def default_max_memory() -> Limit:
    ram = physical_memory()
    limits = [Limit(int(ram * DEFAULT_SHARE) if ram else 8 << 30).named(
        f"--max-memory (default: {DEFAULT_SHARE:.0%} of the RAM)")]
    cgroup = cgroup_memory()
    if cgroup is not None:
        limits.append(Limit(int(cgroup * DEFAULT_SHARE)).named(
            f"the memory this container may use ({DEFAULT_SHARE:.0%} of its cgroup limit)",
            "the container's memory limit"))
    room = address_space_room()
    if room is not None:
        limits.append(Limit(room).named("the address space `ulimit -v` leaves this process",
                                        "`ulimit -v`"))
    return min(limits)


def parse_size(text: str | int | None) -> int:
    """`8G`, `512MiB`, `1.5gb`, `1000000` -> bytes; None -> the default share of the RAM
    (see default_max_memory)."""
    if text is None:
        return default_max_memory()
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ArchError(f"--max-memory must be positive, got {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS or float(m.group(1)) <= 0:
        raise ArchError(f"--max-memory {text}: expected a size such as 8G, 512M or 1.5GiB")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def _nbytes(shape, dtype: str, bindings: Mapping[str, int]) -> int:
    n = np.dtype(dtype).itemsize
    for d in shape:
        n *= evaluate(d, bindings)
    return n


def _value_bytes(node, bindings) -> int:
    if node.dtype == "tuple":
        return sum(_nbytes(s, d, bindings) for s, d in node.parts)
    return _nbytes(node.shape, node.dtype, bindings)


def param_bytes(g: Graph) -> int:
    return sum(_nbytes(n.shape, n.dtype, {}) for n in g.params())


def activation_bytes(g: Graph, bindings: Mapping[str, int]) -> int | None:
    """Peak bytes of live values when running `g` with these sizes; None if a size is
    unknown. Mirrors the reference executor: a value is freed after its last use."""
    plan = g.meta.get("memory_plan")
    if plan is not None and getattr(plan, "bindings", None) == dict(bindings):
        return int(plan.arena_bytes)
    try:
        order = g.topo()
        uses = {n: g.nx.out_degree(n) for n in order}
        keep = set(g.outputs.values())
        live = peak = 0
        for nid in order:
            node = g.node(nid)
            if node.op != "param":
                live += _value_bytes(node, bindings)
                peak = max(peak, live)
            for a in set(g.args(nid)):
                uses[a] -= g.nx.number_of_edges(a, nid)
                if uses[a] == 0 and a not in keep and g.node(a).op != "param":
                    live -= _value_bytes(g.node(a), bindings)
        return peak
    except KeyError:   # a symbolic size without a value
        return None


def estimate(g: Graph, bindings: Mapping[str, int] | None = None) -> Estimate:
    kv = g.meta.get("kv_plan")
    return Estimate(param_bytes(g),
                    None if bindings is None else activation_bytes(g, bindings),
                    int(getattr(kv, "total_bytes", 0) or 0))


def _refuse(what: str, need: str, limit: int, hint: str) -> ArchError:
    why = getattr(limit, "why", "--max-memory")
    hint = hint.replace("--max-memory", getattr(limit, "knob", "--max-memory"))
    return ArchError(f"{what} needs {need}, more than {why} {fmt(limit)}", hint=hint)


def check_model(g: Graph, limit: int) -> Estimate:
    """Before any parameter is allocated (random init or checkpoint)."""
    est = estimate(g)
    if est.total > limit:
        raise _refuse(f"model `{g.name}`", est.describe(), limit,
                      "make the model smaller (fewer layers, smaller widths) or raise "
                      "--max-memory if the machine really has the memory")
    return est


def check_run(g: Graph, bindings: Mapping[str, int], limit: int) -> Estimate:
    """Before executing: parameters + activations for these input sizes."""
    est = estimate(g, bindings)
    if est.total > limit:
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(bindings.items()))
        raise _refuse(f"running `{g.name}`" + (f" with {sizes}" if sizes else ""),
                      est.describe(), limit,
                      "use shorter or fewer inputs (smaller batch or sequence) or raise "
                      "--max-memory")
    return est


def check_generate(ex, batch: int, max_seq: int | None, limit: int,
                   new_tokens: int = 0, vocab: int = 0) -> Estimate:
    """Before generating: parameters + the KV cache the compiler plans for this batch, on
    the graph the executor `ex` runs (the optimised one: a hand-written attention is one
    fused, cached attention there, not per-head products with no cache), + the new ids,
    + every step's float32 logits when they are kept (`vocab` > 0; twice: the steps and
    their stacked copy)."""
    g = ex.graph
    kp = ex.toolchain.plan_kv_cache(g, batch, max_seq, None)
    est = Estimate(param_bytes(g), None, kp.total_bytes if kp is not None else 0,
                   batch * new_tokens * 8, 2 * batch * new_tokens * vocab * 4)
    if est.total > limit:
        seq = f", {kp.max_seq} positions" if kp is not None else ""
        many = est.new_ids + est.kept_logits >= 1 << 20
        raise _refuse(f"generating with `{g.name}` (batch {batch}{seq})", est.describe(), limit,
                      ("ask for fewer --max-new-tokens, lower" if many else "lower")
                      + " --max-seq or the batch, or raise --max-memory")
    return est


def check_file(path: str | os.PathLike, limit: int, what: str) -> None:
    """A file that is read whole (weights, inputs) must fit too."""
    p = Path(path)
    try:
        files = [p] if p.is_file() else [f for f in p.glob("*.safetensors") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
    except OSError:
        return   # the reader reports a missing or unreadable file with its own message
    if size > limit:
        raise ArchError(f"{what} {p} is {fmt(size)}, more than "
                        f"{getattr(limit, 'why', '--max-memory')} {fmt(limit)}",
                        hint="raise --max-memory if the machine really has the memory")


def plan_lanes() -> int:
    """The lanes a memory plan gives per-lane scratch (dsl/scratch.py LANES): as many as a
    program on this machine may run (Numba's thread limit, runtime/jit.py max_threads:
    NUMBA_NUM_THREADS, else the CPUs this process may use), whatever a run's threads, so
    one plan serves every run and `archc dump` shows it. Read without importing Numba."""
    env = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:           # not on Linux
        return max(1, os.cpu_count() or 1)
