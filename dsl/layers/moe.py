"""Mixture-of-experts layer: a router and E experts (FFN, or GLU with gated=true), per-expert
parameters `experts.{e}.up/down/gate.weight` stacked into the `moe` op.

    x (B, T, d) -> router (d, E) softmax -> top-k experts per token
                -> sum_k w_k * expert_k(x)                              (B, T, d)
"""
from __future__ import annotations

from . import layer
from .attention import _layer_index
from .basic import _size, _tensor
from .ffn import _act, _width



@layer("MoE")
def moe(ctx, x, experts, d_ff, top_k=1, capacity=None, capacity_factor=None, act="relu",
        gated=False, normalize=None, scale=True, sparse_step=1, std=0.02):
    """MoE(x, experts, d_ff, top_k=1, capacity=none, capacity_factor=none, act="relu",
    gated=false, normalize=top_k>1, scale=true, sparse_step=1): experts are FFNs
    (down(act(up x))) or GLUs (down(act(gate x) * up x)); `capacity` assignments per expert
    per sequence, or capacity_factor * top_k * T / experts, overflow passes through (0);
    normalize renormalises the top-k weights; sparse_step=n makes only the layers of a
    repeat stack with index % n == 1 sparse (HF Switch `encoder_sparse_step`), the others
    a dense FFN in sub-scope `dense`"""
    x = _tensor(ctx, x, "MoE")
    d = _width(ctx, x, "MoE")
    E = _size(ctx, experts, "MoE: `experts`")
    F = _size(ctx, d_ff, "MoE: `d_ff`")
    act = _act(ctx, act, "MoE")
    k = _size(ctx, top_k, "MoE: `top_k`")
    if k > E:
        raise ctx.error(f"MoE: top_k={k} is more than the {E} experts")
    step = _size(ctx, sparse_step, "MoE: `sparse_step`")
    if step > 1:
        i = _layer_index(ctx.scope)
        if i is None:
            raise ctx.error("MoE: sparse_step needs the layer inside a `repeat` stack")
        if i % step != 1:
            # a dense layer of the stack: the same FFN, without routing
            with ctx.sub("dense"):
                return _expert(ctx, x, d, F, act, gated, std)
    with ctx.sub("router"):
        router = ctx.param("weight", (d, E), std=std)                # (d, E)
    ws = {"up": [], "down": [], "gate": []}
    for e in range(E):
        with ctx.sub("experts"), ctx.sub(str(e)):
            for name, shape in _expert_shapes(d, F, gated):
                with ctx.sub(name):
                    ws[name].append(ctx.param("weight", shape, std=std))
    stacked = [ctx.op("stack", *ws["up"]), ctx.op("stack", *ws["down"])]  # (E, d, F), (E, F, d)
    if gated:
        stacked.append(ctx.op("stack", *ws["gate"]))
    return ctx.op("moe", x, router, *stacked, top_k=k, act=act, capacity=capacity,
                  capacity_factor=None if capacity_factor is None else float(capacity_factor),
                  normalize=bool(k > 1 if normalize is None else normalize), scale=bool(scale))


def _expert_shapes(d: int, F: int, gated: bool):
    return ([("gate", (d, F))] if gated else []) + [("up", (d, F)), ("down", (F, d))]


def _expert(ctx, x, d: int, F: int, act: str, gated: bool, std: float):
    """One dense expert: down(act(up x)), or down(act(gate x) * up x) when gated."""
    w = {}
    for name, shape in _expert_shapes(d, F, gated):
        with ctx.sub(name):
            w[name] = ctx.param("weight", shape, std=std)
    h = ctx.op("linear", x, w["up"])                                    # (B, T, F)
    h = ctx.op("mul", ctx.op(act, ctx.op("linear", x, w["gate"])), h) if gated else ctx.op(act, h)
    return ctx.op("linear", h, w["down"])                               # (B, T, d)
