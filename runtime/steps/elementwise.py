"""Element-wise steps: arithmetic with broadcasting, activations, casts."""
from __future__ import annotations

import numpy as np

from ...dsl.ops import activations
from ..kernels import elementwise as k_ew
from . import fallback, steps_for

_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
_UNARY = {"neg": np.negative, "exp": np.exp, "sqrt": np.sqrt, "square": np.square}


@steps_for(*_UFUNCS)
def build_binary(P, node, args, attrs):
    out = P.output()
    a2, b2 = _row_broadcast(out, *args)
    if a2 is not None:
        P.step(k_ew.binary_rows, out.reshape(-1, a2.shape[1]), a2, b2, k_ew.BINARY[node.op])
    else:
        P.step(_UFUNCS[node.op], args[0], args[1], out)
    return out


def _row_broadcast(out, a, b):
    """(a, b) as (1|R, K) views when one is `out`-shaped and the other broadcasts over its
    leading dims (a bias, a position table): NumPy buffers such broadcasts."""
    if a.shape == b.shape or out.ndim < 1 or not (a.dtype == b.dtype == out.dtype) \
            or not (a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
        return None, None
    for full, part in ((a, b), (b, a)):
        tail = part.shape[next((i for i, d in enumerate(part.shape) if d != 1), part.ndim):]
        if full.shape == out.shape and tail and out.shape[-len(tail):] == tail:
            k = int(np.prod(tail))
            f2, p2 = full.reshape(-1, k), part.reshape(1, k)
            return (f2, p2) if full is a else (p2, f2)
    return None, None


@steps_for(*_UNARY)
def build_unary(P, node, args, attrs):
    out = P.output()
    P.step(_UNARY[node.op], args[0], out)
    return out


@steps_for("rsqrt")
def build_rsqrt(P, node, args, attrs):
    out = P.output()
    P.step(np.sqrt, args[0], out)
    P.step(np.divide, 1.0, out, out)
    return out


@steps_for(*activations())
def build_activation(P, node, args, attrs):
    x = args[0]
    if x.dtype != np.dtype(node.dtype):
        return fallback(f"compiled for {node.dtype} input, got {x.dtype}")
    out = P.output()
    P.step(k_ew.activation, out.reshape(-1), P.contiguous(x).reshape(-1), k_ew.ACT[node.op])
    return out


@steps_for("cast")
def build_cast(P, node, args, attrs):
    out = P.output()
    P.step(np.copyto, out, args[0], "unsafe")
    return out


@steps_for("dropout")
def build_dropout(P, node, args, attrs):
    return args[0]          # inference: the identity (training runs use the reference)
