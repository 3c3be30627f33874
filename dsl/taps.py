"""Taps: any named value of a model returned beside its outputs.

    g2 = add_taps(g, ["layers.3.ffn", "layers.*.moe.router"])
    g2.outputs   # {..., "layers.3.ffn": node, "layers.0.moe.router": node, ...}

A tap names
- a scope (`layers.3`, `layers.3.ffn`, `encoder.layers.0.attn`): its value is what the
  scope hands on, the last value computed inside it that is read outside it (a layer
  call's result; a block iteration's output);
- an MoE layer's router (`layers.3.moe.router`): the experts each token is sent to, (..., T,
  top_k), -1 where an expert was full (op `moe_router`, beside the `moe` it mirrors);
- a node id, as `archc dump` shows them (`layers.0.attn.rope`).
`*` and `?` match as in file names (`layers.*.moe.router`). Scopes inside a `repeat` are
one per iteration, so a tap reaches into any of them. A tap that matches nothing is an
error with the closest names.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Sequence

from .errors import ArchError, did_you_mean
from .graph import Graph

LEAVES = ("input", "param", "const")


def _within(scope: str, prefix: str) -> bool:
    return scope == prefix or scope.startswith(prefix + ".")


def scope_value(g: Graph, scope: str) -> str | None:
    """The value scope `scope` hands on: the last node (in order) inside it that is read
    outside it or is an output; None if it computes nothing."""
    outputs = set(g.outputs.values())
    found = None
    for nid in g.topo():
        node = g.node(nid)
        if node.op in LEAVES or node.dtype == "tuple" or not _within(node.scope, scope):
            continue
        if nid in outputs or any(not _within(g.node(u).scope, scope) for u, _ in g.users(nid)):
            found = nid
    return found


def _names(g: Graph) -> tuple[dict[str, str], list[str]]:
    """Scopes (with every prefix) that compute something -> their value's node; MoE routers."""
    scopes: set[str] = set()
    routers = []
    for node in g.nodes():
        if node.op in LEAVES:
            continue
        parts = node.scope.split(".") if node.scope else []
        scopes.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        if node.op == "moe":
            routers.append(node.id)
    values = {s: v for s in sorted(scopes) if (v := scope_value(g, s)) is not None}
    return values, routers


def add_taps(g: Graph, patterns: Sequence[str]) -> Graph:
    """A copy of `g` whose outputs also hold every value the patterns name (see above)."""
    if not patterns:
        return g
    out = g.copy()
    scopes, moes = _names(out)
    routers = {f"{out.node(m).scope}.router": m for m in moes}
    nodes = {n for n in out.topo() if out.node(n).op not in LEAVES}
    for pattern in patterns:
        hit = False
        for name in sorted(routers):
            if fnmatchcase(name, pattern):
                _tap(out, name, _router(out, routers[name], name))
                hit = True
        for table in (scopes, {n: n for n in nodes}):
            for name in sorted(table):
                if fnmatchcase(name, pattern) and name not in routers and name not in out.outputs:
                    _tap(out, name, table[name])
                    hit = True
            if hit:
                break
        if not hit:
            known = sorted({*routers, *scopes})
            raise ArchError(f"--tap {pattern}: the model has no value of that name",
                            hint=did_you_mean(pattern, known + sorted(nodes)) or
                            "scopes: " + ", ".join(known[:12])
                            + (", ..." if len(known) > 12 else ""))
    return out


def _tap(g: Graph, name: str, nid: str) -> None:
    if name in g.outputs and g.outputs[name] != nid:
        raise ArchError(f"--tap {name}: the model already has an output of that name")
    g.outputs[name] = nid


def _router(g: Graph, moe: str, name: str) -> str:
    node = g.node(moe)
    x, router = g.args(moe)[:2]
    keep = ("top_k", "capacity", "capacity_factor", "normalize")
    top_k = node.attrs.get("top_k", 1)
    return g.add("moe_router", [x, router], shape=tuple(node.shape[:-1]) + (top_k,),
                 dtype="int64", attrs={k: node.attrs[k] for k in keep if k in node.attrs},
                 span=node.span, scope=name, name=name)
