"""The Python API, as small as the CLI:

    model = archc.load("examples/gpt2.arch", weights="model.safetensors", seed=0)
    out = model.run(ids=np.array([[1, 2, 3]]))      # {"logits": array, ...}
    model.graph                                      # the layer graph (networkx inside)
    print(model.dump())
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from .dsl.errors import ArchError
from .dsl.graph import Graph
from .dsl.lower import lower


class Model:
    def __init__(self, graph: Graph, params: dict[str, np.ndarray], warnings: list[str]):
        self.graph = graph
        self.params = params
        self.warnings = warnings

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def inputs(self) -> dict[str, str]:
        return {self.graph.node(n).attrs["name"]: self.graph.node(n).type_str
                for n in self.graph.inputs}

    def run(self, inputs: Mapping[str, np.ndarray] | None = None,
            **named: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on named inputs; returns {output name: array}."""
        from .runtime.reference import run_reference
        return run_reference(self.graph, {**(inputs or {}), **named}, self.params)

    def dump(self, format: str = "text", **options) -> str:
        from .compiler import dump
        return {"text": dump.dump_text, "json": dump.dump_json,
                "dot": dump.dump_dot}[format](self.graph, **options)


def load(path: str | os.PathLike, weights: str | os.PathLike | None = None, seed: int = 0,
         model: str | None = None, allow_missing: bool = False) -> Model:
    """Parse, check and build a model; parameters come from `weights` (safetensors), inline
    values, or deterministic random initialisation from `seed`."""
    from .runtime.weights import apply_weights, init_params, read_safetensors
    graph = lower(path, model)
    warnings: list[str] = []
    if weights is None:
        params = init_params(graph, seed)
    else:
        params, warnings = apply_weights(graph, read_safetensors(weights), seed, allow_missing,
                                         source=f"weights {weights}")
    return Model(graph, params, warnings)


__all__ = ["ArchError", "Model", "load"]
