"""The memory budget: refuse a model that would not fit, before allocating anything.

One place estimates what a run needs, so every check (and later plan) agrees:

    parameters    every param's bytes (sizes are always known numbers)
    activations   the compiler's activation arena (graph.meta["memory_plan"].arena_bytes)
                  when planned; else the reference executor's peak of live values, which
                  it frees after their last use (needs the input sizes)
    kv cache      graph.meta["kv_plan"].total_bytes when the compiler planned one; for
                  `generate`, the plan for its batch and --max-seq (check_generate)

`check_*` raise an ArchError naming the figure, the limit and what to change. The limit is
`--max-memory` (`8G`, `512M`, `1.5GiB`, bytes), by default DEFAULT_SHARE of the RAM.
"""
from __future__ import annotations

import os
import re
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

    @property
    def total(self) -> int:
        return self.parameters + (self.activations or 0) + self.kv_cache

    def describe(self) -> str:
        parts = [f"parameters {fmt(self.parameters)}"]
        if self.activations is not None:
            parts.append(f"activations {fmt(self.activations)}")
        if self.kv_cache:
            parts.append(f"KV cache {fmt(self.kv_cache)}")
        return " + ".join(parts)


def fmt(n: int) -> str:
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


def default_max_memory() -> int:
    ram = physical_memory()
    return int(ram * DEFAULT_SHARE) if ram else 8 << 30


def parse_size(text: str | int | None) -> int:
    """`8G`, `512MiB`, `1.5gb`, `1000000` -> bytes; None -> the default share of the RAM."""
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
    return ArchError(f"{what} needs {need}, more than --max-memory {fmt(limit)}", hint=hint)


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


def check_generate(ex, batch: int, max_seq: int | None, limit: int) -> Estimate:
    """Before generating: parameters + the KV cache the compiler plans for this batch, on
    the graph the executor `ex` runs (the optimised one: a hand-written attention is one
    fused, cached attention there, not per-head products with no cache)."""
    g = ex.graph
    kp = ex.toolchain.plan_kv_cache(g, batch, max_seq, None)
    est = Estimate(param_bytes(g), None, kp.total_bytes if kp is not None else 0)
    if est.total > limit:
        seq = f", {kp.max_seq} positions" if kp is not None else ""
        raise _refuse(f"generating with `{g.name}` (batch {batch}{seq})", est.describe(), limit,
                      "lower --max-seq or the batch, or raise --max-memory")
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
        raise ArchError(f"{what} {p} is {fmt(size)}, more than --max-memory {fmt(limit)}",
                        hint="raise --max-memory if the machine really has the memory")
