"""The layer graph: frozen `Node` records on a networkx MultiDiGraph.

A node is one op with its attributes, inferred shape (symbolic dims kept symbolic), dtype,
source span and layer scope (`layers.3.attn`). An edge `src -> dst` carries `pos`, the
argument position of `src` in `dst`'s argument list; a MultiDiGraph because `x * x` uses
one value twice. Topological order is deterministic (ties broken by insertion order) so
dumps are stable.

Special ops:
    input   a model input; attrs: name
    param   a parameter; attrs: name (full dotted name), init ("normal"/"ones"/"zeros"/
            "value"), std, value (np.ndarray for inline literals)
    const   a literal tensor; attrs: value (np.ndarray)
    getitem picks part `index` of a multi-output node (dtype "tuple")
"""
from __future__ import annotations

import copy as _copy
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import networkx as nx

from .dims import DimLike, numel, shape_str
from .errors import Span

Shape = tuple[DimLike, ...]


@dataclass(frozen=True)
class Node:
    id: str
    op: str
    attrs: Mapping[str, Any]
    shape: Shape | None          # None for multi-output nodes (dtype "tuple")
    dtype: str                   # "float32" | "int64" | "bool" | "tuple"
    span: Span | None = None
    scope: str = ""
    parts: tuple[tuple[Shape, str], ...] = ()   # (shape, dtype) per output of a tuple node

    def with_(self, **changes) -> "Node":
        if "attrs" in changes:
            changes["attrs"] = MappingProxyType(dict(changes["attrs"]))
        return replace(self, **changes)

    @property
    def type_str(self) -> str:
        if self.dtype == "tuple":
            return "(" + ", ".join(f"{_dt(d)}{shape_str(s)}" for s, d in self.parts) + ")"
        return f"{_dt(self.dtype)}{shape_str(self.shape)}"


def _dt(dtype: str) -> str:
    return {"float32": "float", "int64": "int", "bool": "bool"}.get(dtype, dtype)


@dataclass
class RepeatInfo:
    """A `repeat N as name` stack: iterations are scopes `name.0` ... `name.{N-1}`."""
    name: str        # full scope prefix, e.g. "layers" or "decoder.layers"
    count: int
    span: Span | None = None


@dataclass
class Graph:
    name: str = "model"
    nx: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    inputs: list[str] = field(default_factory=list)             # node ids of `input` nodes
    outputs: dict[str, str] = field(default_factory=dict)       # output name -> node id
    repeats: list[RepeatInfo] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)          # source file, config, ...
    _order: int = 0

    # ---- building -------------------------------------------------------------------
    def add(self, op: str, args: Iterable[str] = (), *, shape: Shape | None, dtype: str,
            attrs: Mapping[str, Any] | None = None, span: Span | None = None,
            scope: str = "", name: str | None = None,
            parts: tuple[tuple[Shape, str], ...] = ()) -> str:
        nid = self.fresh_id(name or (f"{scope}.{op}" if scope else op))
        node = Node(nid, op, MappingProxyType(dict(attrs or {})),
                    None if shape is None else tuple(shape), dtype, span, scope, parts)
        self.nx.add_node(nid, node=node, order=self._order)
        self._order += 1
        for pos, a in enumerate(args):
            self.nx.add_edge(a, nid, key=pos, pos=pos)
        return nid

    def fresh_id(self, base: str) -> str:
        if base not in self.nx:
            return base
        i = 1
        while f"{base}_{i}" in self.nx:
            i += 1
        return f"{base}_{i}"

    def set_node(self, node: Node) -> None:
        """Replace a node's record (same id); edges are untouched."""
        self.nx.nodes[node.id]["node"] = node

    def set_args(self, nid: str, args: list[str]) -> None:
        for src, _, key in list(self.nx.in_edges(nid, keys=True)):
            self.nx.remove_edge(src, nid, key)
        for pos, a in enumerate(args):
            self.nx.add_edge(a, nid, key=pos, pos=pos)

    def replace_uses(self, old: str, new: str) -> None:
        """Point every consumer of `old` (and graph outputs) at `new`."""
        for _, dst, key, data in list(self.nx.out_edges(old, keys=True, data=True)):
            if dst == new:
                continue
            self.nx.remove_edge(old, dst, key)
            self.nx.add_edge(new, dst, key=data["pos"], pos=data["pos"])
        for k, v in self.outputs.items():
            if v == old:
                self.outputs[k] = new

    def remove(self, nid: str) -> None:
        self.nx.remove_node(nid)
        if nid in self.inputs:
            self.inputs.remove(nid)

    def copy(self) -> "Graph":
        g = Graph(self.name, self.nx.copy(), list(self.inputs), dict(self.outputs),
                  list(self.repeats), _copy.deepcopy(self.meta), self._order)
        return g

    # ---- reading --------------------------------------------------------------------
    def node(self, nid: str) -> Node:
        return self.nx.nodes[nid]["node"]

    def __contains__(self, nid: str) -> bool:
        return nid in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def args(self, nid: str) -> list[str]:
        edges = sorted(self.nx.in_edges(nid, data="pos"), key=lambda e: e[2])
        return [src for src, _, _ in edges]

    def users(self, nid: str) -> list[tuple[str, int]]:
        """(consumer id, argument position) for each use, in topological-ish order."""
        uses = [(dst, pos) for _, dst, pos in self.nx.out_edges(nid, data="pos")]
        return sorted(uses, key=lambda u: (self.nx.nodes[u[0]]["order"], u[1]))

    def n_uses(self, nid: str) -> int:
        return self.nx.out_degree(nid) + sum(1 for v in self.outputs.values() if v == nid)

    def topo(self) -> list[str]:
        order = self.nx.nodes(data="order")
        return list(nx.lexicographical_topological_sort(self.nx, key=lambda n: order[n]))

    def nodes(self) -> list[Node]:
        return [self.node(n) for n in self.topo()]

    def params(self) -> list[Node]:
        return [n for n in self.nodes() if n.op == "param"]

    def param_count(self) -> int:
        return sum(int(numel(n.shape)) for n in self.params())

    def input_nodes(self) -> list[Node]:
        return [self.node(n) for n in self.inputs]
