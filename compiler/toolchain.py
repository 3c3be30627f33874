"""The compiler as the runtime sees it (runtime/toolchain.py): the pipeline and the plans
an executor asks for at the sizes it binds. archc/api.py hands `COMPILER` to each
executor, so the runtime never imports this stage."""
from __future__ import annotations

from typing import Mapping

from ..dsl.errors import ArchError
from ..dsl.graph import Graph
from .ir import param_derived
from .passes import last_position as _last_position
from .passes import plan_kv_cache as _kv
from .passes import plan_memory as _memory
from .pipeline import run_pipeline
from .sizes import context_length


class Compiler:
    def optimise(self, graph: Graph, warnings: list[str] | None = None) -> Graph:
        """The pipeline without the plans (they are made per run, for the sizes bound); the
        graph as written if the pipeline fails (a compiler bug: the run still gives right
        answers, and the warning says so)."""
        try:
            return run_pipeline(graph, skip=("plan_kv_cache", "plan_memory")).graph
        except ArchError:
            raise
        except Exception as e:  # noqa: BLE001
            if warnings is not None:
                warnings.append(f"optimisation skipped (compiler error: "
                                f"{type(e).__name__}: {e})")
            return graph

    def plan_memory(self, graph: Graph, bindings: Mapping[str, int], kv=None, lanes: int = 1):
        return _memory.plan(graph, bindings, kv=kv, lanes=lanes)

    def plan_kv_cache(self, graph: Graph, batch: int, max_seq: int | None,
                      dims: Mapping[str, int] | None = None, select=None):
        return _kv.plan(graph, batch, max_seq, dims, select=select)

    def last_position(self, graph: Graph, output: str, axis: int = 1) -> tuple[Graph, bool]:
        res = _last_position.last_position(graph, output, axis)
        return res.graph, res.changed

    def param_derived(self, graph: Graph) -> set[str]:
        return param_derived(graph)

    def context_length(self, graph: Graph) -> tuple[int | None, str]:
        return context_length(graph)


COMPILER = Compiler()
