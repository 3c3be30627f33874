"""Embedding lookups."""
from __future__ import annotations

from ..kernels import embedding as k_emb
from ..reference import vocabulary_error
from . import fallback, steps_for

@steps_for("embedding")
def build_embedding(P, node, args, attrs):
    ids, table = args
    if ids.dtype.kind not in "iu" or table.ndim != 2:
        return fallback("compiled for integer ids and a 2-D table")
    out = P.output()
    vocab = table.shape[0]
    span = node.span
    ids1, out2 = P.contiguous(ids, "ids").reshape(-1), out.reshape(-1, table.shape[1])

    def lookup():
        if k_emb.embedding(out2, ids1, table):
            raise vocabulary_error(ids1, vocab, span)
    P.step(lookup)
    P.deferred(k_emb.embedding, out2, ids1, table)
    return out
