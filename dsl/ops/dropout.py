"""Dropout: recorded in the graph with its rate; the identity at inference."""
from __future__ import annotations

from . import TT, ShapeError, is_float, op


@op("dropout", inputs=("x",), attrs={"rate": 0.0}, traits=("elementwise", "unary", "view"))
def dropout(x: TT, rate: float = 0.0) -> TT:
    """dropout(x, rate): identity at inference; in training (`archc run --train --seed N`)
    zeroes each element with probability `rate` and scales the rest by 1 / (1 - rate)"""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ShapeError(f"dropout: rate must be a number in [0, 1), got {rate!r}")
    if not is_float(x.dtype):
        raise ShapeError(f"dropout needs a float tensor, got {x}", arg=0)
    return x
