"""T5 relative position bias: a learned (buckets, heads) table looked up by the bucketed
distance between each query and key position.

    relative_position_bias(xq, xk, table)   xq (..., T, C), xk (..., S, C), table (NB, H)
        -> (1, H, T, S), added to the attention scores of every layer

Buckets (Mesh TensorFlow / HF `_relative_position_bucket`): for an encoder
(bidirectional) half the buckets are for keys after the query; within each half, distances
below half the buckets are exact and the rest grow logarithmically up to `max_distance`,
beyond which all share the last bucket. A decoder (bidirectional=false) buckets only keys
at or before the query (later keys share bucket 0; the causal mask hides them anyway).
"""
from __future__ import annotations

from ..dims import shape_str
from . import TT, ShapeError, is_float, op


@op("relative_position_bias", inputs=("xq", "xk", "table"),
    attrs={"bidirectional": True, "max_distance": 128, "offset": 0}, traits=("position", "position_bias"))
def relative_position_bias(xq: TT, xk: TT, table: TT, bidirectional: bool = True,
                           max_distance: int = 128, offset: int = 0) -> TT:
    """relative_position_bias(xq, xk, table, bidirectional=true, max_distance=128, offset=0):
    T5's bucketed bias (1, heads, T, S) for queries xq (.., T, C) and keys xk (.., S, C);
    table (num_buckets, heads); query i sits at position offset + i (decoding with a cache)"""
    for i, (t, what) in enumerate(((xq, "xq"), (xk, "xk"))):
        if len(t.shape) < 2:
            raise ShapeError(f"relative_position_bias: {what} must be (..., length, C) to give "
                             f"the {'query' if i == 0 else 'key'} length, got {t}", arg=i)
    if len(table.shape) != 2 or not is_float(table.dtype):
        raise ShapeError(f"relative_position_bias: table must be float (num_buckets, heads), got "
                         f"{table}", arg=2)
    nb = table.shape[0]
    if bidirectional and nb % 2:
        raise ShapeError(f"relative_position_bias: a bidirectional table needs an even number "
                         f"of buckets, got {nb}", arg=2)
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or \
            max_distance <= (nb // 2 if bidirectional else nb) // 2:
        raise ShapeError(f"relative_position_bias: max_distance must be a whole number above "
                         f"the {(nb // 2 if bidirectional else nb) // 2} exact buckets, got "
                         f"{max_distance!r}")
    return TT((1, table.shape[1], xq.shape[-2], xk.shape[-2]), table.dtype)
