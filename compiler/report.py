"""Per-layer figures of a compiled graph, as `archc stats` and the HTML report show them.

    layer         params   FLOPs/token   act. peak   KV B/token   KV bytes
    layers.3      7.1M     14.2M         2.3 MiB     3,072        3.1 MiB

FLOPs are evaluated at the sizes bound (B, T, ...) and divided by the tokens B*T; the
activation peak of a layer is the planned bytes alive while any of its steps runs (from the
memory plan's lifetimes); KV bytes are the layer's cache entries (from the KV plan). A
figure whose plan did not run is 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..dsl.dims import evaluate
from ..dsl.graph import Graph
from .dump import layer_groups, node_flops


@dataclass
class LayerRow:
    name: str                 # "(model)" for the nodes outside every layer
    params: int
    flops_per_token: float
    act_peak: int             # bytes
    kv_per_token: int         # bytes one more token of context adds, per sequence
    kv_bytes: int


def layer_rows(g: Graph, bindings: Mapping[str, int], tokens: int) -> list[LayerRow]:
    """One row per layer of `g` (after plan_kv_cache and plan_memory, when they ran), and
    a last row "total" (whose activation figure is the planned arena)."""
    mp, kp = g.meta.get("memory_plan"), g.meta.get("kv_plan")
    bindings = {**mp.bindings, **bindings} if mp else dict(bindings)
    live_by_step = live_bytes(mp, len(g)) if mp else []
    step = {n: i for i, n in enumerate(g.topo())}
    groups = layer_groups(g)
    kv_by_layer: dict[str, tuple[int, int]] = {}
    for e in (kp.entries if kp else []):
        key = next((grp.name for grp in groups if any(n.id == e.node for n in grp.nodes)), "")
        per_tok = (2 * e.kv_bytes + e.pos_bytes) // (e.slots * kp.batch) if e.kind == "self" else 0
        kv_by_layer[key] = (per_tok, e.bytes)
    rows = []
    for grp in groups:
        flops = 0
        for n in grp.nodes:
            try:
                flops += evaluate(node_flops(g, n), bindings)
            except KeyError:          # a size left unbound: not counted
                pass
        peak = max((live_by_step[step[n.id]] for n in grp.nodes if n.id in step),
                   default=0) if live_by_step else 0
        per_tok, kv_total = kv_by_layer.get(grp.name, (0, 0))
        rows.append(LayerRow(grp.name or "(model)", grp.params, flops / tokens, peak, per_tok,
                             kv_total))
    rows.append(LayerRow("total", sum(r.params for r in rows),
                         sum(r.flops_per_token for r in rows), mp.arena_bytes if mp else 0,
                         kp.bytes_per_token() if kp else 0, kp.total_bytes if kp else 0))
    return rows


def live_bytes(mp, n_steps: int) -> list[int]:
    """Planned bytes alive at each step of the program."""
    live = [0] * n_steps
    for root, (born, last) in mp.lifetimes.items():
        for s in range(born, min(last, n_steps - 1) + 1):
            live[s] += mp.slots[root][1]
    return live
