"""Memory layers: product-key memory, prepended memory slots and their mask."""
from __future__ import annotations

import numpy as np

from ...dsl.ops.memory import LANES
from ..kernels import memory as k_mem
from . import fallback, rows, steps_for

@steps_for("product_key_memory")
def build_product_key_memory(P, node, args, attrs):
    q, keys, values = args
    if q.dtype.kind != "f" or keys.dtype.kind != "f" or values.dtype != np.dtype(node.dtype):
        return fallback("compiled for float queries, keys and values")
    q2 = rows(P.contiguous(q, "q"))
    N, n, k, Dv = q2.shape[0], keys.shape[2], attrs["topk"], values.shape[1]
    lanes = max(1, min(N, LANES))
    out = P.output()
    P.step(k_mem.product_key_memory, rows(out), q2, keys, values, k,
           P.temp("s", (lanes, 2, n), np.float64), P.temp("top_v", (lanes, 2, k), np.float64),
           P.temp("top_i", (lanes, 2, k), np.int64), P.temp("best_v", (lanes, k), np.float64),
           P.temp("best_i", (lanes, k), np.int64), P.temp("acc", (lanes, Dv), np.float64))
    return out


@steps_for("prepend_memory")
def build_prepend_memory(P, node, args, attrs):
    x, slots = args
    if slots.dtype != x.dtype:
        return fallback("compiled for slots of x's dtype")
    S, C = x.shape[-2:]
    out = P.output()
    P.step(k_mem.prepend_memory, out.reshape(-1, out.shape[-2], C),
           P.contiguous(x, "x").reshape(-1, S, C), slots)
    return out


@steps_for("memory_mask")
def build_memory_mask(P, node, args, attrs):
    mask = args[0]
    n = attrs.get("slots", 1)
    out = P.output()
    P.step(np.copyto, out[..., :n], np.ones((), out.dtype))
    P.step(np.copyto, out[..., n:], mask)
    return out
