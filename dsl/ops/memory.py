"""Product-key memory (Lample et al. 2019, "Large Memory Layers with Product Keys").

    product_key_memory(q, keys, values, topk, heads)
        q       (..., H*Dk)          one query per head
        keys    (H, 2, n, Dk/2)      two sub-key tables per head; the n*n keys are all pairs
        values  (n*n, Dv)            value embeddings, key (i, j) -> row i*n + j
    -> (..., Dv)

Per head: split the query into halves, score each half against its sub-key table and keep
the top-k of each; the k*k sums of kept scores cover the best k of all n*n keys (exactly);
keep their top-k, softmax them, and take the weighted sum of those values. The heads'
outputs are summed (paper, sec. 3.2).
"""
from __future__ import annotations

from ..dims import DimLike, dim_add, dim_mul, numel, shape_str
from ..scratch import copy_unless_contiguous, rows
from . import TT, ShapeError, is_float, op

# The compiled kernel works in at most this many parallel lanes, each with its own scratch
# rows (the scratch rule below plans them, the step builder hands them out).
LANES = 8


def _flops(out: TT, q: TT, keys: TT, values: TT, *, topk=1, heads=1, **_a) -> DimLike:
    n, half = keys.shape[2], keys.shape[3]
    rows = numel(q.shape[:-1])
    return dim_mul(rows, heads * (2 * 2 * n * half + topk * topk + 2 * topk * values.shape[1]))


def _pkm_scratch(node, args, cache):
    # per lane: both halves' scores, their top-k, the best k pairs, a float64 accumulator
    q, keys, values = args
    n = keys.shape[2]
    k = node.attrs.get("topk", 32)
    lanes = max(1, min(rows(q), LANES))
    return copy_unless_contiguous("q", q) + [
        ("s", (lanes, 2, n), "float64"), ("top_v", (lanes, 2, k), "float64"),
        ("top_i", (lanes, 2, k), "int64"), ("best_v", (lanes, k), "float64"),
        ("best_i", (lanes, k), "int64"), ("acc", (lanes, values.shape[1]), "float64")]


@op("product_key_memory", inputs=("q", "keys", "values"), attrs={"topk": 32, "heads": 1},
    flops=_flops, traits=("memory", "composite"), scratch=_pkm_scratch)
def product_key_memory(q: TT, keys: TT, values: TT, topk: int = 32, heads: int = 1) -> TT:
    """product_key_memory(q, keys, values, topk=32, heads=1): top-k lookup over n*n product
    keys, softmax-weighted sum of values; q (..., heads*Dk), keys (heads, 2, n, Dk/2),
    values (n*n, Dv)"""
    if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
        raise ShapeError(f"product_key_memory: heads must be a positive whole number, got "
                         f"{heads!r}")
    if len(keys.shape) != 4 or keys.shape[0] != heads or keys.shape[1] != 2:
        raise ShapeError(f"product_key_memory: keys must be (heads, 2, n, Dk/2) with heads="
                         f"{heads}, got {shape_str(keys.shape)}", arg=1)
    n, half = keys.shape[2], keys.shape[3]
    if not q.shape or not is_float(q.dtype) or q.shape[-1] != dim_mul(heads, 2 * half):
        raise ShapeError(f"product_key_memory: q must be float (..., heads*Dk) = (..., "
                         f"{heads}*{2 * half}), got {q}", arg=0)
    if len(values.shape) != 2 or values.shape[0] != n * n:
        raise ShapeError(f"product_key_memory: values must be (n*n, Dv) = ({n * n}, Dv) for "
                         f"n={n} sub-keys, got {shape_str(values.shape)}", arg=2)
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= n:
        raise ShapeError(f"product_key_memory: topk must be a whole number from 1 to the {n} "
                         f"sub-keys, got {topk!r}")
    return TT(tuple(q.shape[:-1]) + (values.shape[1],), values.dtype)


@op("prepend_memory", inputs=("x", "slots"), traits=("memory", "mixes_positions"),
    scratch=lambda node, args, cache: copy_unless_contiguous("x", args[0]))
def prepend_memory(x: TT, slots: TT) -> TT:
    """prepend_memory(x, slots): learned memory slots (N, C) put before the keys or values
    x (..., S, C) of every batch row -> (..., N + S, C) (persistent memory, Sukhbaatar et
    al. 2019)"""
    if len(x.shape) < 2 or not is_float(x.dtype):
        raise ShapeError(f"prepend_memory: x must be a float tensor (..., S, C), got {x}", arg=0)
    if len(slots.shape) != 2 or slots.shape[1] != x.shape[-1]:
        raise ShapeError(f"prepend_memory: slots must be (N, {x.shape[-1]}), got "
                         f"{shape_str(slots.shape)}", arg=1)
    shape = list(x.shape)
    shape[-2] = dim_add(slots.shape[0], shape[-2])
    return TT(tuple(shape), x.dtype)


@op("memory_mask", inputs=("mask",), attrs={"slots": 1}, traits=("memory", "mixes_positions"))
def memory_mask(mask: TT, slots: int = 1) -> TT:
    """memory_mask(mask, slots): a key mask (..., S) with `slots` always-visible keys put
    before it -> (..., slots + S), to go with prepend_memory"""
    if not mask.shape or mask.dtype not in ("bool", "int64"):
        raise ShapeError(f"memory_mask: mask must be bool or int (..., S), got {mask}", arg=0)
    if isinstance(slots, bool) or not isinstance(slots, int) or slots <= 0:
        raise ShapeError(f"memory_mask: slots must be a positive whole number, got {slots!r}")
    return TT(tuple(mask.shape[:-1]) + (dim_add(slots, mask.shape[-1]),), mask.dtype)
