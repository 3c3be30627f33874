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
import heapq
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
    # answers kept until an edit changes them (the passes ask often): topo() until the next
    # structural edit (a sort of a GPT-2 graph costs ~6 ms; compiling one asked 53 times),
    # args() per node (sorting a node's in-edges in networkx, ~10 us; T5's compile asked
    # 142k times). Edits go through the methods below, which keep both right.
    _topo: list[str] | None = field(default=None, repr=False, compare=False)
    _args: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)
    # base id -> the suffix fresh_id tries first: ids stay the smallest free `base_i`, as
    # when every call counted up from 1, but each call is O(1) amortised (that count made
    # lowering quadratic: 10k statements took 49 s)
    _next: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    # ---- building -------------------------------------------------------------------
    def add(self, op: str, args: Iterable[str] = (), *, shape: Shape | None, dtype: str,
            attrs: Mapping[str, Any] | None = None, span: Span | None = None,
            scope: str = "", name: str | None = None,
            parts: tuple[tuple[Shape, str], ...] = ()) -> str:
        nid = self.fresh_id(name or (f"{scope}.{op}" if scope else op))
        self._topo = None
        node = Node(nid, op, MappingProxyType(dict(attrs or {})),
                    None if shape is None else tuple(shape), dtype, span, scope, parts)
        self.nx.add_node(nid, node=node, order=self._order)
        self._order += 1
        for pos, a in enumerate(args):
            self.nx.add_edge(a, nid, key=pos, pos=pos)
        self._args.pop(nid, None)
        return nid

    def fresh_id(self, base: str) -> str:
        if base not in self.nx:
            return base
        i = self._next.get(base, 1)
        while f"{base}_{i}" in self.nx:
            i += 1
        self._next[base] = i
        return f"{base}_{i}"

    def set_node(self, node: Node) -> None:
        """Replace a node's record (same id); edges are untouched."""
        self.nx.nodes[node.id]["node"] = node

    def set_args(self, nid: str, args: list[str]) -> None:
        self._topo = None
        self._args.pop(nid, None)
        for src, _, key in list(self.nx.in_edges(nid, keys=True)):
            self.nx.remove_edge(src, nid, key)
        for pos, a in enumerate(args):
            self.nx.add_edge(a, nid, key=pos, pos=pos)

    def replace_uses(self, old: str, new: str) -> None:
        """Point every consumer of `old` (and graph outputs) at `new`."""
        self._topo = None
        for _, dst, key, data in list(self.nx.out_edges(old, keys=True, data=True)):
            if dst == new:
                continue
            self._args.pop(dst, None)
            self.nx.remove_edge(old, dst, key)
            self.nx.add_edge(new, dst, key=data["pos"], pos=data["pos"])
        for k, v in self.outputs.items():
            if v == old:
                self.outputs[k] = new

    def remove(self, nid: str) -> None:
        self._topo = None
        self._args.pop(nid, None)
        for _, dst in self.nx.out_edges(nid):
            self._args.pop(dst, None)
        self.nx.remove_node(nid)
        if nid in self.inputs:
            self.inputs.remove(nid)
        base, _, k = nid.rpartition("_")
        if k.isdigit() and self._next.get(base, 0) > int(k):
            self._next[base] = int(k)        # that suffix is free again

    def copy(self) -> "Graph":
        g = Graph(self.name, self.nx.copy(), list(self.inputs), dict(self.outputs),
                  list(self.repeats), _copy.deepcopy(self.meta), self._order)
        g._topo = self._topo             # never edited in place: replaced when invalidated
        g._args = dict(self._args)       # its lists are never edited in place either
        g._next = dict(self._next)
        return g

    # ---- reading --------------------------------------------------------------------
    def node(self, nid: str) -> Node:
        return self.nx.nodes[nid]["node"]

    def __contains__(self, nid: str) -> bool:
        return nid in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def args(self, nid: str) -> list[str]:
        got = self._args.get(nid)
        if got is None:
            edges = sorted(self.nx.in_edges(nid, data="pos"), key=lambda e: e[2])
            got = self._args[nid] = [src for src, _, _ in edges]
        return list(got)

    def users(self, nid: str) -> list[tuple[str, int]]:
        """(consumer id, argument position) for each use, in topological-ish order."""
        uses = [(dst, pos) for _, dst, pos in self.nx.out_edges(nid, data="pos")]
        return sorted(uses, key=lambda u: (self.nx.nodes[u[0]]["order"], u[1]))

    def n_uses(self, nid: str) -> int:
        return self.nx.out_degree(nid) + sum(1 for v in self.outputs.values() if v == nid)

    def topo(self) -> list[str]:
        """Node ids in topological order, ties broken by creation order (what networkx's
        lexicographical_topological_sort gives, in plain dicts: ~10x faster)."""
        if self._topo is None:
            order = dict(self.nx.nodes(data="order"))
            waiting = dict(self.nx.in_degree())            # in-edges not yet satisfied
            succ = self.nx.succ
            ready = [(order[n], n) for n, d in waiting.items() if d == 0]
            heapq.heapify(ready)
            out = []
            while ready:
                _, n = heapq.heappop(ready)
                out.append(n)
                for dst, edges in succ[n].items():
                    waiting[dst] -= len(edges)
                    if waiting[dst] == 0:
                        heapq.heappush(ready, (order[dst], dst))
            if len(out) != len(waiting):
                raise nx.NetworkXUnfeasible("the graph has a cycle")
            self._topo = out
        return list(self._topo)

    def nodes(self) -> list[Node]:
        return [self.node(n) for n in self.topo()]

    def params(self) -> list[Node]:
        return [n for n in self.nodes() if n.op == "param"]

    def param_count(self) -> int:
        return sum(int(numel(n.shape)) for n in self.params())

    def input_nodes(self) -> list[Node]:
        return [self.node(n) for n in self.inputs]
