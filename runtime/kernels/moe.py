"""Mixture of experts (NumPy reference): route, enforce capacity, run the chosen experts."""
from __future__ import annotations

import math

import numpy as np

from .elementwise import ref_gelu, ref_gelu_tanh, ref_relu, ref_silu
from .norm import ref_softmax

_ACT = {"relu": ref_relu, "gelu": ref_gelu, "gelu_tanh": ref_gelu_tanh, "silu": ref_silu}


def moe_capacity(T: int, E: int, top_k: int, capacity=None, capacity_factor=None) -> int | None:
    """Assignments an expert accepts per sequence; None is unlimited."""
    if capacity is not None:
        return int(capacity)
    if capacity_factor is not None:
        return math.ceil(top_k * T * capacity_factor / E)
    return None


def moe_route(x, router, top_k=1, capacity=None, capacity_factor=None, normalize=False):
    """(experts, weights, kept) for tokens x (N, T, C): each (N, T, top_k). Expert choices
    are ordered by probability; `kept` is False where the expert was already full."""
    probs = ref_softmax((x @ router).astype(np.float32))                  # (N, T, E)
    order = np.argsort(-probs, axis=-1, kind="stable")[..., :top_k]      # (N, T, k)
    weights = np.take_along_axis(probs, order, axis=-1).astype(np.float64)
    if normalize:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    N, T, E = probs.shape
    cap = moe_capacity(T, E, top_k, capacity, capacity_factor)
    kept = np.ones(order.shape, dtype=bool)
    if cap is not None:
        for n in range(N):
            used = np.zeros(E, dtype=np.int64)
            for r in range(top_k):          # every first choice before any second choice
                for t in range(T):
                    e = order[n, t, r]
                    used[e] += 1
                    kept[n, t, r] = used[e] <= cap
    return order, weights, kept


def ref_moe(x, router, w_up, w_down, w_gate=None, top_k=1, act="relu", capacity=None,
            capacity_factor=None, normalize=False, scale=True):
    shape = x.shape
    xs = x.reshape((-1,) + shape[-2:])                                    # (N, T, C)
    experts, weights, kept = moe_route(xs, router, top_k, capacity, capacity_factor, normalize)
    if not scale:
        weights = np.ones_like(weights)
    x64 = xs.astype(np.float64)
    out = np.zeros(x64.shape, dtype=np.float64)
    for e in range(router.shape[1]):
        n, t, r = np.nonzero((experts == e) & kept)
        if n.size == 0:
            continue
        tok = x64[n, t]                                                   # (m, C)
        h = tok @ w_up[e]
        if w_gate is not None:
            h = _ACT[act](tok @ w_gate[e]) * h
        else:
            h = _ACT[act](h)
        np.add.at(out, (n, t), (h @ w_down[e]) * weights[n, t, r][:, None])
    return out.reshape(shape).astype(x.dtype)
