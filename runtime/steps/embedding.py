"""Embedding lookups."""
from __future__ import annotations

from ..kernels import _quant as k_quant, embedding as k_emb
from ..packed import is_packed
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
    # a packed table (a tied embedding stored int8 / bf16) is widened row by row
    kernel, tables = ((k_quant.gather_packed, (table.data, table.scales)) if is_packed(table)
                      else (k_emb.embedding, (table,)))

    def lookup():
        if kernel(out2, ids1, *tables):
            raise vocabulary_error(ids1, vocab, span)
    P.step(lookup)
    P.deferred(kernel, out2, ids1, *tables)
    return out
