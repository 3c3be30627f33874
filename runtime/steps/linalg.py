"""Matrix products: linear and its fused forms (linear_act, linear_glu, ffn), matmul."""
from __future__ import annotations

import numpy as np

from ..kernels import _quant as k_quant, elementwise as k_ew, ffn as k_ffn, linalg as k_linalg
from .. import tune
from ..packed import is_packed
from . import fallback, rows, steps_for, zeros

GEMV_ROWS = 4     # up to this many rows (decode steps), our matrix-vector kernel; then BLAS


def _product(P, x2, w, y2, c0: int, c1: int) -> tuple:
    """(fn, args) computing y2[:, c0:c1] = x2 @ w[:, c0:c1], by the kernel measured fastest
    on this machine for this class of product (runtime/tune.py): one of archc's own
    kernels, which read the output-major weight as it lies, or BLAS."""
    if is_packed(w):
        return _packed_product(P, x2, w, y2, c0, c1)
    wt = w.T
    own_ok = x2.flags.c_contiguous and y2.flags.c_contiguous and x2.dtype == w.dtype == y2.dtype
    kernel = tune.choose_product(x2, wt[c0:c1], c1 - c0) if own_ok else "blas"
    if kernel != "blas" and wt.flags.c_contiguous:
        return tune.KERNELS[kernel], (y2, x2, wt, c0, c1)
    if (c0, c1) == (0, y2.shape[1]):
        return np.dot, (x2, w, y2)
    return np.matmul, (x2, w[:, c0:c1], y2[:, c0:c1])


def _product_calls(P, x2, w, y2, c0: int, c1: int, b, kind: int, epilogue: bool) -> list:
    """[(fn, args)] computing y2[:, c0:c1] = act(x2 @ w[:, c0:c1] + b[c0:c1]): the product,
    then the epilogue over those columns, one pass over rows (c1 - c0) wide (the
    micro-kernel's docstring says why not panel by panel)."""
    fn, args = _product(P, x2, w, y2, c0, c1)
    if not epilogue:
        return [(fn, args)]
    return [(fn, args), (k_ew.bias_act_cols, (y2, b, kind, c0, c1))]


def _packed_product(P, x2, w, y2, c0: int, c1: int) -> tuple:
    """int8 / bf16 weights (runtime/packed.py): widened a panel at a time into the kernel
    measured fastest for packed products of this class (tune.choose_packed_product)."""
    kernel = tune.choose_packed_product(x2, w, c0, c1)
    args = (y2, x2, w.data, w.scales, c0, c1,
            None if kernel == "blas" else tune.KERNELS[kernel])
    for fn, example in k_quant.gemm_packed_calls(*args):
        P.deferred(fn, *example)
    return k_quant.gemm_packed, args


def _gemm(P, x, w, y2, bias, act: str | None):
    """y2 = act(x @ w + bias): BLAS, then one fused epilogue pass when there is one; for a
    few rows with an output-major weight, one kernel streaming the weight once; with
    lanes, the output columns are cut into items the lanes share out as they go
    (Program.shared_step), each item's epilogue with it."""
    x2 = rows(P.contiguous(x, "x"))
    if y2.shape[0] <= GEMV_ROWS and y2.flags.c_contiguous and (is_packed(w) or (
            w.T.flags.c_contiguous and w.dtype.kind == "f")):
        b = bias if bias is not None else zeros(y2.shape[1], y2.dtype)
        kind = k_ew.ACT[act or "identity"]
        if is_packed(w):
            P.step(k_quant.gemv_packed, y2, x2, w.data, w.scales, b, kind, P.ex.threads)
        else:
            P.step(k_linalg.gemv_t, y2, x2, w.T, b, kind, P.ex.threads)
        return
    epilogue = bias is not None or act not in (None, "identity")
    b = bias if bias is not None else zeros(y2.shape[1], y2.dtype)
    kind = k_ew.ACT[act or "identity"]
    N = y2.shape[1]
    flops = 2.0 * x2.shape[0] * x2.shape[1] * N
    items = P.column_items(N, flops)
    if len(items) > 1 and y2.flags.c_contiguous:
        P.shared_step([_product_calls(P, x2, w, y2, c0, c1, b, kind, epilogue)
                       for c0, c1 in items])
        return
    calls = _product_calls(P, x2, w, y2, 0, N, b, kind, epilogue)
    if len(calls) == 2:                      # the epilogue over all of y: bias_act
        calls[1] = (k_ew.bias_act, (y2, b, kind))
    for fn, args in calls:
        P.step(fn, *args)


DTYPES = "compiled for float x and 2-D weights of the result's dtype"


def _linear_ok(x, w, out_dtype) -> bool:
    return (x.dtype == w.dtype == np.dtype(out_dtype) and x.dtype.kind == "f" and w.ndim == 2
            and x.ndim >= 1)


@steps_for("linear", "linear_act")
def build_linear(P, node, args, attrs):
    x, w = args[:2]
    if not _linear_ok(x, w, node.dtype):
        return fallback(DTYPES)
    out = P.output()
    _gemm(P, x, w, rows(out), args[2] if len(args) > 2 else None, attrs.get("act"))
    return out


def _glu(P, x, w, b, act, out2, tag):
    h = P.temp(tag, (out2.shape[0], w.shape[1]), out2.dtype)      # (N, 2F) = [gate | up]
    F = out2.shape[1]
    flops = 4.0 * out2.shape[0] * w.shape[0] * F
    items = P.column_items(F, flops)
    if len(items) > 1 and out2.shape[0] > GEMV_ROWS and out2.flags.c_contiguous:
        # an item: gate and up columns c0:c1 of h, then act(gate) * up into out2[:, c0:c1]
        x2 = rows(P.contiguous(x, "x"))
        kind = k_ew.ACT[act]
        per_item = []
        for c0, c1 in items:
            calls = []
            for lo, hi in ((c0, c1), (F + c0, F + c1)):
                calls += _product_calls(P, x2, w, h, lo, hi, b, 0, b is not None)
            calls.append((k_ffn.glu_cols, (out2, h, kind, c0, c1)))
            per_item.append(calls)
        P.shared_step(per_item)
        return
    _gemm(P, x, w, h, b, None)
    P.step(k_ffn.glu_merged, out2, h, k_ew.ACT[act])


@steps_for("linear_glu")
def build_linear_glu(P, node, args, attrs):
    x, w = args[:2]
    if not _linear_ok(x, w, node.dtype):
        return fallback(DTYPES)
    out = P.output()
    _glu(P, x, w, args[2] if len(args) > 2 else None, attrs["act"], rows(out), "h")
    return out


@steps_for("ffn")
def build_ffn(P, node, args, attrs):
    x, w1, w2, *biases = args
    if not (_linear_ok(x, w1, node.dtype) and _linear_ok(x, w2, node.dtype)):
        return fallback(DTYPES)
    b1 = biases[0] if attrs.get("bias1") else None
    b2 = biases[-1] if attrs.get("bias2") else None
    out = P.output()
    n = int(np.prod(x.shape[:-1], dtype=np.int64))
    F = w2.shape[0]
    hidden = P.temp("hidden", (n, F), x.dtype)                      # (N, F)
    if attrs.get("glu"):
        _glu(P, x, w1, b1, attrs["act"], hidden, "h")
    else:
        _gemm(P, x, w1, hidden, b1, attrs["act"])
    _gemm(P, hidden, w2, rows(out), b2, None)
    return out


@steps_for("matmul")
def build_matmul(P, node, args, attrs):
    a, b = args
    if a.dtype != b.dtype or a.dtype != np.dtype(node.dtype):
        return fallback("compiled for operands of the result's dtype")
    if attrs.get("transpose_b"):
        b = np.swapaxes(b, -1, -2)      # a strided view: BLAS reads b transposed
    out = P.output()
    P.step(np.matmul, a, b, out)
    return out
