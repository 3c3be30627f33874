"""Table lookups."""
from __future__ import annotations

from ..dims import shape_str
from ..scratch import copy_unless_contiguous
from . import TT, ShapeError, op


@op("embedding", inputs=("ids", "table"), traits=("gather",),
    # the kernel reads the ids as one flat row
    scratch=lambda node, args, cache: copy_unless_contiguous("ids", args[0]))
def embedding(ids: TT, table: TT) -> TT:
    """embedding(ids, table) = table[ids]; table of shape (vocab, dim)"""
    if ids.dtype != "int64":
        raise ShapeError(f"embedding: ids must be int, got {ids}", arg=0)
    if len(table.shape) != 2:
        raise ShapeError(f"embedding: table must be 2-D (vocab, dim), got {shape_str(table.shape)}",
                         arg=1)
    return TT(tuple(ids.shape) + (table.shape[1],), table.dtype)
