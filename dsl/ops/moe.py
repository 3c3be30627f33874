"""Mixture of experts: a softmax router picks top-k experts per token; each expert is an FFN
(or a GLU when `w_gate` is given); the chosen experts' outputs are summed, weighted.

    moe(x, router, w_up, w_down, w_gate?)
        x       (..., T, C)      tokens; capacity is counted per row of T (per sequence)
        router  (C, E)           router weight, stored (in, out) like every linear
        w_up    (E, C, F)        per-expert stacked weights, (in, out) per expert
        w_down  (E, F, C)
        w_gate  (E, C, F)        GLU experts: down(act(x @ w_gate) * (x @ w_up))
    -> (..., T, C)

Capacity (Switch): an expert takes at most `capacity` assignments per sequence, first come
by position (all first choices before any second choice). An assignment over capacity
contributes nothing, so the token passes through on the residual. `capacity` gives the
number directly (HF `expert_capacity`); `capacity_factor` computes it per run as
ceil(top_k * T * capacity_factor / E). Neither means unlimited.
"""
from __future__ import annotations

from ..dims import DimLike, dim_add, dim_mul, numel, shape_str
from ..scratch import copy_unless_contiguous, rows
from . import TT, ShapeError, activations, is_float, op


def _check_routing(name: str, x: TT, router: TT, top_k) -> DimLike:
    """x (..., T, C), router (C, E) and top_k as `moe` and `moe_router` take them; returns E."""
    if len(x.shape) < 2 or not is_float(x.dtype):
        raise ShapeError(f"{name}: x must be a float tensor (..., T, C), got {x}", arg=0)
    C = x.shape[-1]
    if len(router.shape) != 2 or router.shape[0] != C:
        raise ShapeError(f"{name}: router must be (C, E) = ({C}, experts), got "
                         f"{shape_str(router.shape)}", arg=1)
    E = router.shape[1]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= E:
        raise ShapeError(f"{name}: top_k must be a whole number from 1 to the {E} experts, "
                         f"got {top_k!r}")
    return E


def _moe_flops(out: TT, x: TT, router: TT, w_up: TT, w_down: TT, *gate, top_k=1, **_a) -> DimLike:
    tokens = numel(out.shape[:-1])
    C, F = w_up.shape[1], w_up.shape[2]
    per_token = dim_mul(2, dim_mul(C, router.shape[1]))                     # router
    per_token = dim_add(per_token, dim_mul(top_k, dim_mul(4 + 2 * len(gate), dim_mul(C, F))))
    return dim_mul(tokens, per_token)


def _routing_scratch(node, args, cache):
    # router logits and the routing: weights of the choices, per-expert token lists (the
    # choices themselves are moe_router's output; `moe` adds them as scratch "choice")
    x, router = args[:2]
    M, E = rows(x), router.shape[1]
    k = node.attrs.get("top_k", 1)
    return copy_unless_contiguous("x", x) + [
        ("logits", (M, E), x.dtype), ("weight", (M, k), "float64"),
        ("offsets", (E + 1,), "int64"), ("used", (E,), "int64"),
        ("slot_tok", (M * k,), "int64"), ("slot_w", (M * k,), "float64")]


def _moe_scratch(node, args, cache):
    # the routing, then the gathered tokens / hidden / expert outputs of one expert at a
    # time, and a float64 accumulator
    x, router, w_up = args[:3]
    M, C = rows(x), x.shape[-1]
    F = w_up.shape[2]
    gate = len(args) > 4
    return _routing_scratch(node, args, cache) + [
        ("choice", (M, node.attrs.get("top_k", 1)), "int64"),
        ("xg", (M, C), x.dtype), ("h", (M, F), x.dtype), ("hg", (M if gate else 0, F), x.dtype),
        ("y", (M, C), x.dtype), ("acc", (M, C), "float64")]


@op("moe", inputs=("x", "router", "w_up", "w_down", "w_gate?"),
    attrs={"top_k": 1, "act": "relu", "capacity": None, "capacity_factor": None,
           "normalize": False, "scale": True},
    flops=_moe_flops, traits=("moe", "composite"), scratch=_moe_scratch)
def moe(x: TT, router: TT, w_up: TT, w_down: TT, w_gate: TT | None = None, top_k: int = 1,
        act: str = "relu", capacity=None, capacity_factor=None, normalize: bool = False,
        scale: bool = True) -> TT:
    """moe(x, router, w_up, w_down, w_gate?, top_k=1, act="relu", capacity=none,
    capacity_factor=none, normalize=false, scale=true): softmax router, top-k experts per
    token; normalize=true renormalises the k chosen probabilities to sum to 1 (Mixtral,
    GLaM); scale=false adds expert outputs unweighted. Overflowing tokens get 0."""
    E = _check_routing("moe", x, router, top_k)
    C = x.shape[-1]
    if len(w_up.shape) != 3 or w_up.shape[0] != E or w_up.shape[1] != C:
        raise ShapeError(f"moe: w_up must be (E, C, F) = ({E}, {C}, d_ff), got "
                         f"{shape_str(w_up.shape)}", arg=2)
    F = w_up.shape[2]
    if tuple(w_down.shape) != (E, F, C):
        raise ShapeError(f"moe: w_down must be (E, F, C) = ({E}, {F}, {C}), got "
                         f"{shape_str(w_down.shape)}", arg=3)
    if w_gate is not None and tuple(w_gate.shape) != tuple(w_up.shape):
        raise ShapeError(f"moe: w_gate must have the shape of w_up {shape_str(w_up.shape)}, "
                         f"got {shape_str(w_gate.shape)}", arg=4)
    if act not in activations():
        raise ShapeError(f"moe: unknown activation {act!r}; expected one of "
                         f"{', '.join(activations())}")
    if capacity is not None and capacity_factor is not None:
        raise ShapeError("moe: give `capacity` or `capacity_factor`, not both")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int)
                                 or capacity <= 0):
        raise ShapeError(f"moe: capacity must be a positive whole number, got {capacity!r}")
    if capacity_factor is not None and (isinstance(capacity_factor, bool) or
                                        not isinstance(capacity_factor, (int, float))
                                        or capacity_factor <= 0):
        raise ShapeError(f"moe: capacity_factor must be a positive number, got "
                         f"{capacity_factor!r}")
    return x


def _router_flops(out: TT, x: TT, router: TT, **_a) -> DimLike:
    return dim_mul(numel(x.shape[:-1]), dim_mul(2, dim_mul(x.shape[-1], router.shape[1])))


@op("moe_router", inputs=("x", "router"),
    attrs={"top_k": 1, "capacity": None, "capacity_factor": None, "normalize": False},
    flops=_router_flops, traits=("moe",), scratch=_routing_scratch)
def moe_router(x: TT, router: TT, top_k: int = 1, capacity=None, capacity_factor=None,
               normalize: bool = False) -> TT:
    """moe_router(x, router, top_k=1, ...): the experts a `moe` with these settings sends
    each token to, (..., T, top_k), most probable first; -1 where the expert was full (the
    token's assignment dropped). What a tap on an MoE's `router` shows (dsl/taps.py); its
    compiled kernel is the routing step of `moe`'s."""
    _check_routing("moe_router", x, router, top_k)
    return TT(tuple(x.shape[:-1]) + (top_k,), "int64")
