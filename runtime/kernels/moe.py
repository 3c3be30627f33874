"""Mixture of experts (NumPy reference): route, enforce capacity, run the chosen experts."""
from __future__ import annotations

import math

import numpy as np

from .elementwise import apply_activation
from .norm import ref_softmax


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


def ref_moe_router(x, router, top_k=1, capacity=None, capacity_factor=None,
                   normalize=False):
    shape = x.shape
    experts, _, kept = moe_route(x.reshape((-1,) + shape[-2:]), router, top_k, capacity,
                                 capacity_factor, normalize)
    return np.where(kept, experts, -1).astype(np.int64).reshape(shape[:-1] + (top_k,))


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
            h = apply_activation(act, tok @ w_gate[e]) * h
        else:
            h = apply_activation(act, h)
        np.add.at(out, (n, t), (h @ w_down[e]) * weights[n, t, r][:, None])
    return out.reshape(shape).astype(x.dtype)


# ---- compiled kernels (Numba) ------------------------------------------------------------
# Routing as the reference does it (float32 probabilities, ties to the lower expert, every
# first choice before any second choice for capacity), then one expert at a time: gather
# its tokens, two BLAS products, scatter-add weighted rows into a float64 accumulator, in
# expert order like the reference. Every buffer is planned scratch (dsl/ops/moe.py).
# The products are np.dot called from Python (moe_experts), not from inside a kernel:
# Numba compiles np.dot against SciPy's BLAS, and merely having SciPy installed makes
# every Numba start import scipy.linalg (0.25 s), so archc does not depend on it.

from ..jit import njit  # noqa: E402
from .elementwise import FMA, _act_row  # noqa: E402


@njit(cache=True)
def route_tokens(logits, T, top_k, cap, normalize, scale, choice, weight, offsets, used,
                 slot_tok, slot_w):
    # logits: (M, E) = x @ router, M = N*T tokens. Writes the assignment grouped by expert:
    # expert e takes tokens slot_tok[offsets[e]:offsets[e+1]] with weights slot_w[...]
    # cap < 0: unlimited; choice[m, r] = -1 marks a dropped assignment
    M, E = logits.shape
    for m in range(M):
        # softmax in float64, rounded to float32 like the reference's probabilities
        mx = -np.inf
        for e in range(E):
            v = np.float64(np.float32(logits[m, e]))
            if v > mx:
                mx = v
        z = 0.0
        for e in range(E):
            z += np.exp(np.float64(np.float32(logits[m, e])) - mx)
        total = 0.0
        for r in range(top_k):
            best, bp = -1, -1.0
            for e in range(E):
                p = np.float64(np.float32(np.exp(np.float64(np.float32(logits[m, e])) - mx) / z))
                taken = False
                for q in range(r):
                    if choice[m, q] == e:
                        taken = True
                if not taken and p > bp:
                    best, bp = e, p
            choice[m, r] = best
            weight[m, r] = bp
            total += bp
        for r in range(top_k):
            if normalize:
                weight[m, r] /= total
            if not scale:
                weight[m, r] = 1.0
    if cap >= 0:
        for n in range(M // T):
            used[:] = 0
            for r in range(top_k):
                for t in range(T):
                    m = n * T + t
                    e = choice[m, r]
                    used[e] += 1
                    if used[e] > cap:
                        choice[m, r] = -1
    # tokens grouped by expert (counting sort), in token order within an expert
    offsets[:] = 0
    for m in range(M):
        for r in range(top_k):
            if choice[m, r] >= 0:
                offsets[choice[m, r] + 1] += 1
    for e in range(E):
        offsets[e + 1] += offsets[e]
    used[:] = 0
    for m in range(M):
        for r in range(top_k):
            e = choice[m, r]
            if e >= 0:
                i = offsets[e] + used[e]
                used[e] += 1
                slot_tok[i] = m
                slot_w[i] = weight[m, r]


@njit(cache=True)
def gather_rows(out, x, idx):
    # out: (n, C) = x[idx]  (NumPy's take would allocate an index buffer)
    for i in range(idx.shape[0]):
        out[i] = x[idx[i]]


@njit(cache=True, error_model="numpy", fastmath=FMA)
def expert_act(h, hg, has_gate, kind):
    # h: (n, F) <- act(hg) * h with a gate (hg: (n, F)), act(h) without
    for i in range(h.shape[0]):
        if has_gate:
            _act_row(hg[i], hg[i], kind)
            for f in range(h.shape[1]):
                h[i, f] *= hg[i, f]
        else:
            _act_row(h[i], h[i], kind)


@njit(cache=True)
def scatter_add_rows(acc, y, idx, w):
    # acc[idx[i]] += w[i] * y[i]; acc: (M, C) float64, y: (n, C)
    for i in range(idx.shape[0]):
        m = idx[i]
        for c in range(y.shape[1]):
            acc[m, c] += w[i] * y[i, c]


def moe_experts(out, x, w_up, w_down, w_gate, has_gate, act, offsets, slot_tok, slot_w, xg,
                h, hg, y, acc, dot=np.dot):
    """out: (M, C) = sum over each token's experts of weight * FFN_e(token), after
    route_tokens. w_up, w_gate: (E, C, F)  w_down: (E, F, C)  scratch xg (M, C), h, hg (M, F),
    y (M, C), acc (M, C) float64. `dot(a, b, out)`: np.dot, or the lanes' (runtime/lanes.py)."""
    acc.fill(0.0)
    for e in range(w_up.shape[0]):
        a, b = int(offsets[e]), int(offsets[e + 1])
        if a == b:
            continue
        n = b - a
        gather_rows(xg[:n], x, slot_tok[a:b])
        dot(xg[:n], w_up[e], h[:n])                                   # (n, F)
        if has_gate:
            dot(xg[:n], w_gate[e], hg[:n])
        expert_act(h[:n], hg[:n], has_gate, act)
        dot(h[:n], w_down[e], y[:n])                                  # (n, C)
        scatter_add_rows(acc, y[:n], slot_tok[a:b], slot_w[a:b])
    np.copyto(out, acc, casting="same_kind")
