"""IR helpers shared by the passes: the `PassResult` record, building typed nodes on a graph,
dead-code elimination, and which values are derived from parameters only.

A pass copies its input graph, edits the copy with these helpers and returns a
`PassResult`; the input graph is never touched.

Parameter-derived values: a fusion that merges parameters (Q/K/V or gate/up weights)
emits `concat(param_a, param_b)`; any node whose transitive inputs are only `param` and
`const` nodes is *param-derived* (`param_derived(g)`). It is computed once when the
weights are loaded, not per call: executors evaluate it at load time and the memory plan
keeps it out of the activation arena. The reference executor simply computes it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..dsl.errors import Span
from ..dsl.graph import Graph, Node
from ..dsl.ops import TT, infer

LEAF_OPS = ("input", "param", "const")


@dataclass
class PassResult:
    graph: Graph
    changed: bool
    stats: Counter = field(default_factory=Counter)      # rewrite rule -> times fired
    rejected: list[str] = field(default_factory=list)    # "why candidate X did not fuse"
    coverage: dict[str, tuple[int, int]] = field(default_factory=dict)  # what -> (fused, seen)
    notes: list[str] = field(default_factory=list)       # warnings and plan summaries


def ttype(g: Graph, nid: str) -> TT:
    n = g.node(nid)
    return TT(n.shape, n.dtype)


def emit(g: Graph, op: str, args: list[str], attrs: Mapping[str, Any] | None = None, *,
         scope: str, span: Span | None, name: str | None = None) -> str | list[str]:
    """Add a node with its type inferred from its arguments; a multi-output op returns the
    ids of its getitem nodes, in order."""
    attrs = dict(attrs or {})
    out = infer(op, [ttype(g, a) for a in args], attrs)
    if isinstance(out, TT):
        return g.add(op, args, shape=out.shape, dtype=out.dtype, attrs=attrs, span=span,
                     scope=scope, name=name)
    nid = g.add(op, args, shape=None, dtype="tuple", attrs=attrs, span=span, scope=scope,
                name=name, parts=tuple((t.shape, t.dtype) for t in out))
    return [g.add("getitem", [nid], shape=t.shape, dtype=t.dtype, attrs={"index": i}, span=span,
                  scope=scope, name=f"{nid}.{i}") for i, t in enumerate(out)]


def common_scope(scopes: list[str]) -> str:
    """The longest dotted prefix shared by all scopes (`layers.3.mlp.fc`, `layers.3.mlp.proj`
    -> `layers.3.mlp`)."""
    parts = [s.split(".") if s else [] for s in scopes]
    out = []
    for level in zip(*parts):
        if any(p != level[0] for p in level):
            break
        out.append(level[0])
    return ".".join(out)


def dce(g: Graph) -> int:
    """Remove nodes no output depends on (inputs stay: they are the model's signature)."""
    live: set[str] = set()
    stack = list(g.outputs.values())
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(g.args(n))
    dead = [n for n in g.nx.nodes if n not in live and n not in g.inputs]
    for n in dead:
        g.remove(n)
    return len(dead)


def param_derived(g: Graph) -> set[str]:
    """Nodes computed from parameters and constants only (evaluated once at load)."""
    out: set[str] = set()
    for nid in g.topo():
        node = g.node(nid)
        if node.op in ("param", "const"):
            out.add(nid)
        elif node.op != "input" and g.args(nid) and all(a in out for a in g.args(nid)):
            out.add(nid)
    return out


def is_param_derived(g: Graph, nid: str) -> bool:
    """`nid in param_derived(g)`, looking only at nid's own inputs (a rewrite asking about
    one bias or weight should not scan the whole graph: simplify asked 72 times for
    LLaMA's, 1 s of a 1.7 s compile). False as soon as an input turns up."""
    seen = {nid}
    stack = [nid]
    while stack:
        n = stack.pop()
        node = g.node(n)
        if node.op in ("param", "const"):
            continue
        args = g.args(n)
        if node.op == "input" or not args:
            return False
        for a in args:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return True


def later_users(g: Graph, nid: str, after: str, order: dict[str, int]) -> list[str]:
    """Consumers of `nid` other than `after` that run after `after` in topological order."""
    return [u for u, _ in g.users(nid) if u != after and order[u] > order[after]]


def topo_index(g: Graph) -> dict[str, int]:
    return {n: i for i, n in enumerate(g.topo())}


def where(node: Node) -> str:
    """How messages name a node: its scope (or id) and source line."""
    at = node.scope or node.id
    return f"{at} (line {node.span.line})" if node.span else at
