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

    def run(self, inputs: Mapping[str, np.ndarray] | None = None, *, train: bool = False,
            seed: int = 0, **named: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on named inputs; returns {output name: array}. `train` applies
        dropout, deterministically from `seed`."""
        from .runtime.reference import run_reference
        return run_reference(self.graph, {**(inputs or {}), **named}, self.params,
                             train=train, seed=seed)

    def dump(self, format: str = "text", **options) -> str:
        from .compiler import dump
        return {"text": dump.dump_text, "json": dump.dump_json,
                "dot": dump.dump_dot}[format](self.graph, **options)


def load(path: str | os.PathLike, weights: str | os.PathLike | None = None, seed: int = 0,
         model: str | None = None, allow_missing: bool = False,
         config: Mapping[str, object] | None = None, weights_map: str | None = None) -> Model:
    """Parse, check and build a model; parameters come from `weights` (a .safetensors file
    or a Hugging Face folder), inline values, or deterministic random initialisation from
    `seed`. `config` sets config constants (`{"n_layer": 2}`); a Hugging Face folder's
    config.json sets those its `weights` section maps, unless `config` sets them too.
    Checkpoint names go through the model's `weights` section (`weights_map` chooses one)
    unless they already are the parameter names."""
    from .dsl.lower import load_program
    from .runtime.checkpoint import choose_section, config_overrides, read_checkpoint
    from .runtime.weights import apply_weights, init_params
    warnings: list[str] = []
    ckpt = None if weights is None else read_checkpoint(weights)
    overrides: dict = {}
    if ckpt is not None and ckpt.config is not None:
        sections = load_program(path).weights
        chosen = choose_section(sections, ckpt.tensors, weights_map)
        if chosen is not None:
            overrides, warnings = config_overrides(sections[chosen], ckpt.config)
    graph = lower(path, model, {**overrides, **dict(config or {})})
    if ckpt is None:
        return Model(graph, init_params(graph, seed), warnings)
    maps = graph.meta.get("weight_maps", {})
    names = {n.attrs["name"] for n in graph.params()}
    direct = weights_map is None and set(ckpt.tensors) <= names
    chosen = None if direct else choose_section(maps, ckpt.tensors, weights_map)
    params, more = apply_weights(graph, ckpt.tensors, seed, allow_missing,
                                 source=f"weights {weights}",
                                 mapping=maps[chosen] if chosen is not None else None)
    return Model(graph, params, warnings + more)


__all__ = ["ArchError", "Model", "load"]
