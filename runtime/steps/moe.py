"""Mixture of experts: route, then run each expert over its gathered tokens."""
from __future__ import annotations

import numpy as np

from ..kernels import elementwise as k_ew, moe as k_moe
from . import fallback, rows, steps_for


def _route(P, x, router, attrs, choice):
    """Steps routing x's tokens as the reference does: logits = x @ router, then the top-k
    experts per token into `choice` (M, top_k; -1 where capacity dropped it), with the
    tokens grouped by expert. Returns (x as (M, C) rows, offsets, slot_tok, slot_w)."""
    T, C = x.shape[-2], x.shape[-1]
    M, E = x.size // C, router.shape[1]
    k = attrs.get("top_k", 1)
    cap = k_moe.moe_capacity(T, E, k, attrs.get("capacity"), attrs.get("capacity_factor"))
    t = P.temp
    x2 = rows(P.contiguous(x, "x"))
    logits, weight = t("logits", (M, E), x.dtype), t("weight", (M, k), np.float64)
    offsets, used = t("offsets", (E + 1,), np.int64), t("used", (E,), np.int64)
    slot_tok, slot_w = t("slot_tok", (M * k,), np.int64), t("slot_w", (M * k,), np.float64)
    P.step(np.dot, x2, router, logits)                                  # (M, E)
    P.step(k_moe.route_tokens, logits, T, k, -1 if cap is None else cap,
           bool(attrs.get("normalize")), bool(attrs.get("scale", True)), choice, weight,
           offsets, used, slot_tok, slot_w)
    return x2, offsets, slot_tok, slot_w


@steps_for("moe")
def build_moe(P, node, args, attrs):
    x, router, w_up, w_down, *gate = args
    if x.dtype.kind != "f" or any(w.dtype != x.dtype for w in [router, w_up, w_down, *gate]):
        return fallback("compiled for float x and weights of one dtype")
    C = x.shape[-1]
    M, F = x.size // C, w_up.shape[2]
    out = P.output()
    t = P.temp
    choice = t("choice", (M, attrs.get("top_k", 1)), np.int64)
    x2, offsets, slot_tok, slot_w = _route(P, x, router, attrs, choice)
    xg, h, y = t("xg", (M, C), x.dtype), t("h", (M, F), x.dtype), t("y", (M, C), x.dtype)
    hg = t("hg", (M if gate else 0, F), x.dtype)
    acc = t("acc", (M, C), np.float64)
    w_gate = gate[0] if gate else w_up
    act = k_ew.ACT[attrs.get("act", "relu")]
    P.step(k_moe.moe_experts, rows(out), x2, w_up, w_down, w_gate, bool(gate), act, offsets,
           slot_tok, slot_w, xg, h, hg, y, acc,
           P.ex.lanes.dot if P.ex.lanes is not None else np.dot, blas=True)
    P.deferred(k_moe.gather_rows, xg, x2, slot_tok)
    P.deferred(k_moe.expert_act, h, hg, bool(gate), act)
    P.deferred(k_moe.scatter_add_rows, acc, y, slot_tok, slot_w)
    return out


@steps_for("moe_router")
def build_moe_router(P, node, args, attrs):
    # moe's routing alone: the chosen experts are written straight into the output
    x, router = args
    if x.dtype.kind != "f" or router.dtype != x.dtype:
        return fallback("compiled for float x and a router of its dtype")
    out = P.output()
    _route(P, x, router, attrs, rows(out))
    return out
