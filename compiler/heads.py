"""Reading per-head layouts back: which (B, T, H*D) tensor a per-head operand of a matmul
was split from, through reshapes, transposes and GQA head repetition.

Attention written out (by lower_layers, or by hand in .arch) splits heads as

    qh = transpose(reshape(q, [*L, T, H, D]), [*L, H, T, D])      q: (*L, T, H*D)
    kt = transpose(reshape(k, [*L, S, H, D]), [*L, H, D, S])      (possibly two transposes,
                                                                   or matmul transpose_b)
    GQA: reshape(stack(kh, kh, ..., axis=n+1), [*L, H, S, D])     kh: (*L, Hkv, S, D)

`operand_heads` follows one operand down to its source and says how its heads are laid
out, or why it is not a head split. `*L` are batch dims, n = len(L).
"""
from __future__ import annotations

from typing import NamedTuple

from ..dsl.dims import dim_mul
from ..dsl.graph import Graph, Node


class Heads(NamedTuple):
    src: str        # the tensor before the split: (*L, length, h*D), or the operand itself
    heads: int      # heads the operand has (after repetition)
    groups: int     # how often each source head is repeated (GQA), 1 when not
    split: bool     # False: no head split (one head, every leading dim a batch dim)


def perm_of(node: Node, rank: int) -> list[int]:
    """A transpose's permutation, normalised (no perm: swap the last two axes)."""
    p = node.attrs.get("perm")
    if p is None:
        return list(range(rank - 2)) + [rank - 1, rank - 2]
    return [i % rank for i in p]


def swap_last(rank: int) -> list[int]:
    return list(range(rank - 2)) + [rank - 1, rank - 2]


def walk_transposes(g: Graph, nid: str, start: list[int] | None = None) -> tuple[str, list[int]]:
    """(base, A) with value(nid) = transpose(value(base), A): transposes composed away.
    `start` is a transpose applied on top (matmul's transpose_b)."""
    rank = len(g.node(nid).shape)
    A = list(start) if start is not None else list(range(rank))
    while g.node(nid).op == "transpose":
        p = perm_of(g.node(nid), rank)
        A = [p[i] for i in A]
        nid = g.args(nid)[0]
    return nid, A


def _reshape_split(g: Graph, base: str, n: int) -> tuple[str, int] | None:
    """(src, h) when base = reshape(src (*L, len, h*D) -> (*L, len, h, D))."""
    node = g.node(base)
    if node.op != "reshape":
        return None
    src = g.args(base)[0]
    s, b = tuple(g.node(src).shape), tuple(node.shape)
    if len(s) != n + 2 or len(b) != n + 3 or s[:n + 1] != b[:n + 1]:
        return None
    h = b[n + 1]
    if not isinstance(h, int) or dim_mul(h, b[n + 2]) != s[n + 1]:
        return None
    return src, h


def _repetition(g: Graph, base: str, n: int) -> tuple[str, int] | None:
    """(x, G) when base = reshape(stack(x, ..., x (G times), axis=n+1) -> (*L, Hkv*G, S, D))."""
    node = g.node(base)
    if node.op != "reshape":
        return None
    st = g.args(base)[0]
    stn = g.node(st)
    xs = g.args(st)
    if stn.op != "stack" or len(set(xs)) != 1 or len(stn.shape) != n + 4:
        return None
    if stn.attrs.get("axis", 0) % (n + 4) != n + 1:
        return None
    hkv, G, S, D = stn.shape[n:]
    if tuple(node.shape) != tuple(stn.shape[:n]) + (dim_mul(hkv, G), S, D):
        return None
    return xs[0], G


def operand_heads(g: Graph, nid: str, keys: bool = False,
                  transpose_b: bool = False) -> Heads | str:
    """How operand `nid` of a per-head matmul splits heads: q and v are (*L, H, len, D),
    keys (the right operand of q k^T, with `transpose_b` when the matmul reads it
    transposed) are (*L, H, D, len). A string says why it is not a head split."""
    rank = len(g.node(nid).shape)
    base, A = walk_transposes(g, nid, swap_last(rank) if transpose_b else None)
    n = rank - 3
    if n >= 0:
        to_heads = [*range(n), n + 1, n, n + 2]            # (*L, len, h, D) -> (*L, h, len, D)
        to_keys = [*range(n), n + 1, n + 2, n]             # (*L, len, h, D) -> (*L, h, D, len)
        rep = _repetition(g, base, n)
        if rep is not None:
            x, G = rep
            if A != ([*range(n), n, n + 2, n + 1] if keys else list(range(rank))):
                return "its repeated heads are not laid out (…, heads, length, D)"
            inner, A2 = walk_transposes(g, x)
            split = _reshape_split(g, inner, n)
            if split is None or A2 != to_heads:
                return "the heads it repeats are not split from one tensor by reshape + transpose"
            return Heads(split[0], split[1] * G, G, True)
        split = _reshape_split(g, base, n)
        if split is not None and A == (to_keys if keys else to_heads):
            return Heads(split[0], split[1], 1, True)
    if A == (swap_last(rank) if keys else list(range(rank))):
        return Heads(base, 1, 1, False)
    return "it is not split into heads by reshape + transpose"
