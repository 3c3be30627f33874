"""What the runtime asks of a compiler, as an interface: the runtime never imports the
compiler (data flows dsl -> compiler -> runtime). An `Executor` is handed an object with
these methods (compiler/toolchain.py's `COMPILER`, passed in by archc/api.py) and calls it
for the plans it needs at the sizes a run binds:

    optimise(graph, warnings)              the pipeline's graph, without the plans
    plan_memory(graph, bindings, kv, lanes)  the activation arena for those sizes, per-lane
                                           scratch for `lanes` lanes
    plan_kv_cache(graph, batch, max_seq, dims, select)   the KV cache of a session
    last_position(graph, output, axis)     (graph, changed): `output` for the last position
    param_derived(graph)                   the values computed from weights alone
    context_length(graph)                  (positions, where the number came from)
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

from ..dsl.graph import Graph


class Toolchain(Protocol):
    def optimise(self, graph: Graph, warnings: list[str] | None = None) -> Graph: ...

    def plan_memory(self, graph: Graph, bindings: Mapping[str, int], kv=None,
                    lanes: int = 1) -> Any: ...

    def plan_kv_cache(self, graph: Graph, batch: int, max_seq: int | None,
                      dims: Mapping[str, int] | None = None, select=None) -> Any: ...

    def last_position(self, graph: Graph, output: str, axis: int = 1) -> tuple[Graph, bool]: ...

    def param_derived(self, graph: Graph) -> set[str]: ...

    def context_length(self, graph: Graph) -> tuple[int | None, str]: ...
