"""Op -> steps: how the compiled executor runs each op, as prebuilt calls on fixed arrays.

A builder `build_<op>(P, node, args, attrs)` gets the Program being built (executor.py),
the node, its argument arrays and its attributes (sizes resolved), adds steps with
`P.step(fn, *arrays)`, and returns the node's value: a buffer from `P.output()`, a view
of an argument (reshape, transpose, split: no step at all), or a tuple of either. It may
return None to fall back to the op's `ref_` kernel.

Row-wise kernels see 2-D (rows, C) views, flat kernels 1-D views; non-contiguous inputs
are copied into scratch first (`P.contiguous`), so each Numba kernel compiles once per
dtype. Matrix products go to BLAS through np.dot/np.matmul with `out=`.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .kernels import REFERENCE, attention as k_attn, elementwise as k_ew, ffn as k_ffn
from .kernels import linalg as k_linalg, norm as k_norm, position as k_pos
from ..dsl.errors import ArchError
from ..dsl.ops import activations
from ..dsl.ops.attention import PREFILL_ROWS
from .reference import ExecutionError, vocabulary_error

STEPS: dict[str, Callable] = {}


def steps_for(*ops: str):
    def register(fn):
        for op in ops:
            STEPS[op] = fn
        return fn
    return register


def rows(a: np.ndarray) -> np.ndarray:
    # the row count is explicit: reshape(-1, 0) cannot infer it for a zero-width tensor
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1]) if a.ndim != 2 else a


def _zeros(n: int, dtype) -> np.ndarray:
    return np.zeros(n, dtype)


def view_as(a: np.ndarray, shape) -> np.ndarray | None:
    """`a` reshaped without copying, or None when that would need a copy."""
    v = a.view()
    try:
        v.shape = tuple(shape)
    except AttributeError:
        return None
    return v


# ---- element-wise ----------------------------------------------------------------------------

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
        return None
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


# ---- norms -----------------------------------------------------------------------------------

def _row_step(P, kernel, row_args: tuple, rest: tuple) -> None:
    """kernel(*row_args, *rest), the (rows, C) arrays of row_args cut into row ranges
    across the lanes (one plain step without lanes, or for a small tensor)."""
    n, c = row_args[0].shape
    P.lane_step([[(kernel, tuple(a[r0:r1] for a in row_args) + rest)]
                 for r0, r1 in P.row_lanes(n, n * c)])


def _affine(P, node, x, w, b=None):
    if x.dtype.kind != "f" or x.ndim < 1 or x.dtype != w.dtype:
        return None
    c = x.shape[-1]
    return (rows(P.contiguous(x)), w,
            b if b is not None else _zeros(c, x.dtype))


@steps_for("layernorm")
def build_layernorm(P, node, args, attrs):
    got = _affine(P, node, *args[:3])
    if got is None:
        return None
    x2, w, b = got
    out = P.output()
    _row_step(P, k_norm.layernorm, (rows(out), x2), (w, b, float(attrs["eps"])))
    return out


@steps_for("rmsnorm")
def build_rmsnorm(P, node, args, attrs):
    got = _affine(P, node, args[0], args[1])
    if got is None:
        return None
    x2, w, _ = got
    out = P.output()
    _row_step(P, k_norm.rmsnorm, (rows(out), x2), (w, float(attrs["eps"])))
    return out


@steps_for("add_layernorm", "add_rmsnorm")
def build_add_norm(P, node, args, attrs):
    x, r, w = args[:3]
    if x.shape != r.shape or _affine(P, node, x, w) is None:
        return None
    x2, r2 = rows(P.contiguous(x, "x")), rows(P.contiguous(r, "r"))
    s, y = P.output(0), P.output(1)
    if node.op == "add_layernorm":
        b = args[3] if len(args) > 3 else _zeros(x.shape[-1], x.dtype)
        _row_step(P, k_norm.add_layernorm, (rows(s), rows(y), x2, r2),
                  (w, b, float(attrs["eps"])))
    else:
        _row_step(P, k_norm.add_rmsnorm, (rows(s), rows(y), x2, r2), (w, float(attrs["eps"])))
    return (s, y)


@steps_for("softmax")
def build_softmax(P, node, args, attrs):
    x = args[0]
    if attrs.get("axis", -1) % max(x.ndim, 1) != x.ndim - 1 or x.dtype.kind != "f":
        return None
    out = P.output()
    P.step(k_norm.softmax, rows(out), rows(P.contiguous(x)))
    return out


# ---- matrix products -------------------------------------------------------------------------

GEMV_ROWS = 4     # up to this many rows (decode steps), our matrix-vector kernel; then BLAS
# a prompt's product with at most this many rows and this depth (K) runs gemm_nt, which
# reads the output-major weight as it lies; beyond either OpenBLAS is as fast or faster
# (kernels/linalg.py has the figures)
NT_ROWS, NT_DEPTH = 192, 1024
PREFILL_BLOCK = 64   # query rows per block of a masked prefill attention's products


def _product(x2, w, y2, c0: int, c1: int) -> tuple:
    """(fn, args) computing y2[:, c0:c1] = x2 @ w[:, c0:c1]: gemm_nt for a prompt's
    few hundred rows over an output-major weight of modest depth, else BLAS."""
    M, K = x2.shape
    wt = w.T
    if (GEMV_ROWS < M <= NT_ROWS and K <= NT_DEPTH and wt.flags.c_contiguous
            and x2.flags.c_contiguous and y2.flags.c_contiguous
            and x2.dtype == w.dtype == y2.dtype and x2.dtype.kind == "f"):
        return k_linalg.gemm_nt, (y2, x2, wt, c0, c1)
    if (c0, c1) == (0, y2.shape[1]):
        return np.dot, (x2, w, y2)
    return np.matmul, (x2, w[:, c0:c1], y2[:, c0:c1])


def _gemm(P, x, w, y2, bias, act: str | None):
    """y2 = act(x @ w + bias): BLAS, then one fused epilogue pass when there is one; for a
    few rows with an output-major weight, one kernel streaming the weight once; with
    lanes, each lane computes a range of output columns, epilogue included."""
    x2 = rows(P.contiguous(x, "x"))
    if (y2.shape[0] <= GEMV_ROWS and w.T.flags.c_contiguous and w.dtype.kind == "f"
            and y2.flags.c_contiguous):
        b = bias if bias is not None else _zeros(y2.shape[1], y2.dtype)
        P.step(k_linalg.gemv_t, y2, x2, w.T, b, k_ew.ACT[act or "identity"], P.ex.threads)
        return
    epilogue = bias is not None or act not in (None, "identity")
    b = bias if bias is not None else _zeros(y2.shape[1], y2.dtype)
    kind = k_ew.ACT[act or "identity"]
    ranges = P.column_lanes(y2.shape[1], 2.0 * x2.shape[0] * x2.shape[1] * y2.shape[1])
    if len(ranges) > 1 and y2.flags.c_contiguous:
        P.lane_step([[_product(x2, w, y2, c0, c1)] +
                     ([(k_ew.bias_act_cols, (y2, b, kind, c0, c1))] if epilogue else [])
                     for c0, c1 in ranges])
        return
    fn, args = _product(x2, w, y2, 0, y2.shape[1])
    P.step(fn, *args)
    if epilogue:
        P.step(k_ew.bias_act, y2, b, kind)


def _linear_ok(x, w, out_dtype) -> bool:
    return (x.dtype == w.dtype == np.dtype(out_dtype) and x.dtype.kind == "f" and w.ndim == 2
            and x.ndim >= 1)


@steps_for("linear", "linear_act")
def build_linear(P, node, args, attrs):
    x, w = args[:2]
    if not _linear_ok(x, w, node.dtype):
        return None
    out = P.output()
    _gemm(P, x, w, rows(out), args[2] if len(args) > 2 else None, attrs.get("act"))
    return out


def _glu(P, x, w, b, act, out2, tag):
    h = P.temp(tag, (out2.shape[0], w.shape[1]), out2.dtype)      # (N, 2F) = [gate | up]
    F = out2.shape[1]
    ranges = P.column_lanes(F, 4.0 * out2.shape[0] * w.shape[0] * F)
    if len(ranges) > 1 and out2.shape[0] > GEMV_ROWS and out2.flags.c_contiguous:
        # lane k: gate and up columns c0:c1 of h, then act(gate) * up into out2[:, c0:c1]
        x2 = rows(P.contiguous(x, "x"))
        kind = k_ew.ACT[act]
        per_lane = []
        for c0, c1 in ranges:
            calls = []
            for lo, hi in ((c0, c1), (F + c0, F + c1)):
                calls.append(_product(x2, w, h, lo, hi))
                if b is not None:
                    calls.append((k_ew.bias_act_cols, (h, b, 0, lo, hi)))
            calls.append((k_ffn.glu_cols, (out2, h, kind, c0, c1)))
            per_lane.append(calls)
        P.lane_step(per_lane)
        return
    _gemm(P, x, w, h, b, None)
    P.step(k_ffn.glu_merged, out2, h, k_ew.ACT[act])


@steps_for("linear_glu")
def build_linear_glu(P, node, args, attrs):
    x, w = args[:2]
    if not _linear_ok(x, w, node.dtype):
        return None
    out = P.output()
    _glu(P, x, w, args[2] if len(args) > 2 else None, attrs["act"], rows(out), "h")
    return out


@steps_for("ffn")
def build_ffn(P, node, args, attrs):
    x, w1, w2, *biases = args
    if not (_linear_ok(x, w1, node.dtype) and _linear_ok(x, w2, node.dtype)):
        return None
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
        return None
    if attrs.get("transpose_b"):
        b = np.swapaxes(b, -1, -2)      # a strided view: BLAS reads b transposed
    out = P.output()
    P.step(np.matmul, a, b, out)
    return out


# ---- lookups and positions -------------------------------------------------------------------

@steps_for("embedding")
def build_embedding(P, node, args, attrs):
    from .kernels import embedding as k_emb
    ids, table = args
    if ids.dtype.kind not in "iu" or table.ndim != 2:
        return None
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


@steps_for("positions")
def build_positions(P, node, args, attrs):
    out = P.output()
    base = np.arange(out.shape[0], dtype=np.int64) + int(attrs.get("offset") or 0)
    sess = P.session
    if sess is not None and P.is_dynamic(node.id):
        P.step(lambda: np.add(base, sess.pos, out=out))     # positions continue the cache
    else:
        P.step(np.copyto, out, base)
    return out


def _positions(P, node, B, T, offset, tag="pos"):
    """(B, T) positions offset + arange(T), continuing the cache in a decoding session."""
    pos = P.temp(tag, (B, T), np.int64)
    base = np.broadcast_to(np.arange(T, dtype=np.int64) + int(offset or 0), (B, T)).copy()
    sess = P.session
    if sess is not None and P.is_dynamic(node.id):
        P.step(lambda: np.add(base, sess.pos, out=pos))
    else:
        P.step(np.copyto, pos, base)
    return pos


def _rope_table(P, attrs, pos, head_dim):
    """Steps writing the cos/sin table (B*T, 2, r/2) of positions `pos` (B, T) into
    planned scratch; returns it (one table for an attention's q and k)."""
    r = attrs.get("rotary_dim") or head_dim
    inv_freq = float(attrs.get("theta", 10000.0)) ** (-np.arange(0, r, 2, dtype=np.float64) / r)
    cs = P.temp("rope_cs", (pos.size, 2, r // 2), np.float64)
    flat = P.contiguous(pos, "pos_c").reshape(-1)
    P.lane_step([[(k_pos.rope_table, (cs, flat, inv_freq, n0, n1))]
                 for n0, n1 in P.row_lanes(pos.size, pos.size * r * 8)])
    return cs


def _rope(P, out, x, heads, attrs, cs, tag="rope_q"):
    """Steps rotating x (B, T, heads*D) into out by the table cs; rows cut across lanes."""
    B, T, C = x.shape
    D = _head_dim(attrs, C, heads)
    x4 = view_as(x, (B, T, heads, D))
    if x4 is None:
        x4 = P.contiguous(x, tag).reshape(B, T, heads, D)
    out4 = out.reshape(B, T, heads, D)
    inter = bool(attrs.get("interleaved"))
    if not x4.flags.c_contiguous:
        # a head slice of a fused QKV output: copied whole, then rotated in place, since
        # the rotation vectorises only over contiguous rows (0.36 -> 0.17 ms at T = 512)
        P.step(np.copyto, out4, x4)
        x4 = out4
    P.lane_step([[(k_pos.rope_apply, (out4, x4, cs, inter, n0, n1))]
                 for n0, n1 in P.row_lanes(B * T, B * T * C)], op=P._node.op)


def _head_dim(attrs, C, heads):
    return attrs.get("head_dim") or C // heads


@steps_for("rope")
def build_rope(P, node, args, attrs):
    x = args[0]
    if x.ndim != 3 or x.dtype.kind != "f":
        return None
    B, T, C = x.shape
    pos = args[1] if len(args) > 1 else _positions(P, node, B, T, attrs.get("offset"))
    out = P.output()
    cs = _rope_table(P, attrs, pos, _head_dim(attrs, C, attrs["heads"]))
    _rope(P, out, x, attrs["heads"], attrs, cs)
    return out


@steps_for("rope_attention")
def build_rope_attention(P, node, args, attrs):
    q, k, v, *extra = args
    if q.ndim != 3 or not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        return None
    mask = extra.pop(0) if attrs.get("has_mask") else None
    bias = extra.pop(0) if attrs.get("has_bias") else None
    B, T, _ = q.shape
    pos = extra.pop(0) if attrs.get("has_positions") else \
        _positions(P, node, B, T, attrs.get("offset"))
    if k.shape[1] != T:
        return None
    H = attrs["heads"]
    qr = P.temp("q_rot", q.shape, q.dtype)
    kr = P.temp("k_rot", k.shape, k.dtype)
    cs = _rope_table(P, attrs, pos, _head_dim(attrs, q.shape[2], H))
    _rope(P, qr, q, H, attrs, cs)
    _rope(P, kr, k, attrs.get("kv_heads") or H, attrs, cs, "rope_k")
    return _attention(P, node, qr, kr, v, mask, bias, attrs)


# ---- attention -------------------------------------------------------------------------------

@steps_for("attention")
def build_attention(P, node, args, attrs):
    q, k, v = args[:3]
    if q.ndim != 3 or not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        return None
    mask = args[3] if len(args) > 3 else None
    bias = args[4] if len(args) > 4 else None
    return _attention(P, node, q, k, v, mask, bias, attrs)


def _attention(P, node, q, k, v, mask, bias, attrs):
    B, T, C = q.shape
    S = k.shape[1]
    H = attrs["heads"]
    Hkv = attrs.get("kv_heads") or H
    D = C // H
    scale = 1.0 / math.sqrt(D) if attrs.get("scale") is None else float(attrs["scale"])
    window = int(attrs.get("window") or 0)
    causal = bool(attrs.get("causal"))
    out = P.output()
    out4 = out.reshape(B, T, H, D)
    q4 = view_as(q, (B, T, H, D))
    if q4 is None:
        q4 = P.contiguous(q, "q").reshape(B, T, H, D)
    k4 = view_as(k, (B, S, Hkv, D))
    if k4 is None:
        k4 = P.contiguous(k, "k").reshape(B, S, Hkv, D)
    v4 = view_as(v, (B, S, Hkv, D))
    if v4 is None:
        v4 = P.contiguous(v, "v").reshape(B, S, Hkv, D)
    entry = P.session.cache_entry(P, node, B, Hkv, D, q.dtype) \
        if P.session is not None else None
    if entry is not None:
        # the session's KV cache; it decides how a mask or bias reads it (kv_cache.py)
        return entry.build(P, out4, q4, k4, v4, mask, bias, causal, window, scale)
    if mask is not None:
        m = P.temp("mask", mask.shape, np.bool_)
        P.step(np.not_equal, mask, 0, m)
    else:
        m = np.zeros((B, 0), np.bool_)
    if bias is not None:
        bias4 = np.broadcast_to(bias, (B, H, T, S))
    else:
        bias4 = np.broadcast_to(np.zeros(1, q.dtype), (B, H, T, 0))
    if T > PREFILL_ROWS:
        _attention_blas(P, out4, q4, k4, v4, m, bias4, causal, window, scale)
        return out
    # a plain forward: a transient cache holding keys 0..S-1
    kc = P.temp("kc", (B, Hkv, S, D), q.dtype)
    vc = P.temp("vc", (B, Hkv, S, D), q.dtype)
    kpos = P.temp("kpos", (S,), np.int64)
    scores = P.temp("scores", (B * H, S), np.float64)
    acc = P.temp("acc", (B * H, D), np.float64)
    P.step(k_attn.kv_write, kc, vc, kpos, k4, v4, 0, 0, S)
    P.step(k_attn.attend, out4, q4, kc, vc, kpos, S, S - T, m, bias4, causal, window,
           scale, scores, acc)
    return out


def _attention_blas(P, out4, q4, k4, v4, m, bias4, causal, window, scale):
    """A prompt's attention per (batch, head): two BLAS products around the masked softmax
    (kernels/prefill.py). The head slices are strided views BLAS reads in place (row
    stride H*D), so nothing is copied; query head h reads K/V head h // (H / Hkv). Under a
    causal or window mask the query rows go in blocks, each multiplied only with the keys
    some row of the block sees (causal T = S: about half the products); with lanes, the
    lanes share out the (batch, head) pairs."""
    from .kernels import prefill as k_prefill
    T, S = q4.shape[1], k4.shape[1]
    probs = P.temp("probs", (T, S), q4.dtype)                       # (T, S)
    kc, vc = k4.transpose(0, 2, 1, 3), v4.transpose(0, 2, 1, 3)     # (B, Hkv, S, D) views
    P.lane_step(k_prefill.attention_calls(out4, q4, kc, vc, S, S - T, m, bias4, causal,
                                          window, scale, probs, PREFILL_BLOCK, P.n_lanes))


# ---- data movement ---------------------------------------------------------------------------

@steps_for("reshape")
def build_reshape(P, node, args, attrs):
    x = args[0]
    shape = P.shape(node)
    v = view_as(x, shape) if P.planned_view(node) else None
    if v is not None:
        return v
    out = P.output()
    P.step(np.copyto, out.reshape(x.shape), x)
    return out


@steps_for("transpose")
def build_transpose(P, node, args, attrs):
    x = args[0]
    perm = attrs.get("perm")
    return np.swapaxes(x, -1, -2) if perm is None else np.transpose(x, tuple(perm))


@steps_for("slice")
def build_slice(P, node, args, attrs):
    x = args[0]
    ax = attrs.get("axis", 0) % x.ndim
    idx = [slice(None)] * x.ndim
    idx[ax] = slice(attrs.get("start", 0), attrs.get("stop"), attrs.get("step", 1))
    out = x[tuple(idx)]
    want = P.shape(node)
    if out.shape != want:
        # a symbolic size bound too small for the slice (x[:, 1:3] or x[:, -2:] with T = 1)
        raise ArchError(f"slice {idx[ax].start}:{'' if idx[ax].stop is None else idx[ax].stop}"
                        f" of an axis of size {x.shape[ax]} has {out.shape[ax]} positions; "
                        f"the model's shapes say {want[ax]}", node.span,
                        hint="give inputs long enough for this slice")
    return out


@steps_for("take")
def build_take(P, node, args, attrs):
    x = args[0]
    idx: list = [slice(None)] * x.ndim
    idx[attrs.get("axis", 0)] = attrs.get("index", 0)
    return x[tuple(idx)]


@steps_for("split")
def build_split(P, node, args, attrs):
    x = args[0]
    ax = attrs.get("axis", -1) % x.ndim
    sections = attrs.get("sections", 2)
    n = x.shape[ax]
    sizes = [n // sections] * sections if isinstance(sections, int) else list(sections)
    parts, start = [], 0
    for s in sizes:
        idx = [slice(None)] * x.ndim
        idx[ax] = slice(start, start + s)
        parts.append(x[tuple(idx)])
        start += s
    return tuple(parts)


@steps_for("getitem")
def build_getitem(P, node, args, attrs):
    return args[0][attrs.get("index", 0)]


@steps_for("concat")
def build_concat(P, node, args, attrs):
    out = P.output()
    P.step(_concat, tuple(args), out, attrs.get("axis", -1))
    return out


def _concat(xs, out, axis):
    np.concatenate(xs, axis=axis, out=out)


# ---- families: MoE, memories, long-range attention, position tables ------------------------

@steps_for("moe")
def build_moe(P, node, args, attrs):
    from .kernels import moe as k_moe
    x, router, w_up, w_down, *gate = args
    if x.dtype.kind != "f" or any(w.dtype != x.dtype for w in [router, w_up, w_down, *gate]):
        return None
    T, C = x.shape[-2], x.shape[-1]
    M, E, F = x.size // C, router.shape[1], w_up.shape[2]
    k = attrs.get("top_k", 1)
    cap = k_moe.moe_capacity(T, E, k, attrs.get("capacity"), attrs.get("capacity_factor"))
    out = P.output()
    t = P.temp
    x2 = rows(P.contiguous(x, "x"))
    logits = t("logits", (M, E), x.dtype)
    choice, weight = t("choice", (M, k), np.int64), t("weight", (M, k), np.float64)
    offsets, used = t("offsets", (E + 1,), np.int64), t("used", (E,), np.int64)
    slot_tok, slot_w = t("slot_tok", (M * k,), np.int64), t("slot_w", (M * k,), np.float64)
    xg, h, y = t("xg", (M, C), x.dtype), t("h", (M, F), x.dtype), t("y", (M, C), x.dtype)
    hg = t("hg", (M if gate else 0, F), x.dtype)
    acc = t("acc", (M, C), np.float64)
    w_gate = gate[0] if gate else w_up
    act = k_ew.ACT[attrs.get("act", "relu")]
    P.step(np.dot, x2, router, logits)                                  # (M, E)
    P.step(k_moe.route_tokens, logits, T, k, -1 if cap is None else cap,
           bool(attrs.get("normalize")), bool(attrs.get("scale", True)), choice, weight,
           offsets, used, slot_tok, slot_w)
    P.step(k_moe.moe_experts, rows(out), x2, w_up, w_down, w_gate, bool(gate), act, offsets,
           slot_tok, slot_w, xg, h, hg, y, acc,
           P.ex.lanes.dot if P.ex.lanes is not None else np.dot, blas=True)
    P.deferred(k_moe.gather_rows, xg, x2, slot_tok)
    P.deferred(k_moe.expert_act, h, hg, bool(gate), act)
    P.deferred(k_moe.scatter_add_rows, acc, y, slot_tok, slot_w)
    return out


@steps_for("product_key_memory")
def build_product_key_memory(P, node, args, attrs):
    from ..dsl.ops.memory import LANES
    from .kernels import memory as k_mem
    q, keys, values = args
    if q.dtype.kind != "f" or keys.dtype.kind != "f" or values.dtype != np.dtype(node.dtype):
        return None
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
    from .kernels import memory as k_mem
    x, slots = args
    if slots.dtype != x.dtype:
        return None
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


@steps_for("stack")
def build_stack(P, node, args, attrs):
    out = P.output()
    P.step(_stack, tuple(args), out, attrs.get("axis", 0))
    return out


def _stack(xs, out, axis):
    np.stack(xs, axis=axis, out=out)


def _heads(P, x, H, tag):
    """x (..., T, H*D) as (..., T, H, D) without a copy when possible."""
    shape = x.shape[:-1] + (H, x.shape[-1] // H)
    v = view_as(x, shape)
    return v if v is not None else P.contiguous(x, tag).reshape(shape)


@steps_for("longformer_attention")
def build_longformer_attention(P, node, args, attrs):
    from .kernels import longformer as k_long
    q, k, v, qg, kg, vg, glob_mask, *mask = args
    if q.ndim != 3 or any(a.dtype != q.dtype for a in (k, v, qg, kg, vg)) or q.dtype.kind != "f":
        return None
    B, T, C = q.shape
    H = attrs.get("heads", 1)
    D = C // H
    scale = 1.0 / math.sqrt(D) if attrs.get("scale") is None else float(attrs["scale"])
    glob = P.temp("glob", (B, T), np.bool_)
    P.step(np.not_equal, glob_mask, 0, glob)
    if mask:
        real = P.temp("real", (B, T), np.bool_)
        P.step(np.not_equal, mask[0], 0, real)
    else:
        real = np.zeros((B, 0), np.bool_)
    out = P.output()
    views = [_heads(P, a, H, tag) for a, tag in zip((q, k, v, qg, kg, vg),
                                                     ("q", "k", "v", "qg", "kg", "vg"))]
    P.step(k_long.longformer_attention, out.reshape(B, T, H, D), *views, glob, real,
           int(attrs.get("window", 2)) // 2, scale, P.temp("gidx", (B, T), np.int64),
           P.temp("gcount", (B,), np.int64), P.temp("scores", (B * H, T), np.float64),
           P.temp("acc", (B * H, D), np.float64))
    return out


@steps_for("chunked_cross_attention")
def build_chunked_cross_attention(P, node, args, attrs):
    from .kernels import retro as k_retro
    q, k, v = args
    if q.ndim != 3 or k.ndim != 4 or not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        return None
    B, T, HD = q.shape
    H = attrs.get("heads", 1)
    D = HD // H
    scale = 1.0 / math.sqrt(D) if attrs.get("scale") is None else float(attrs["scale"])
    out = P.output()
    P.step(k_retro.chunked_cross_attention, out.reshape(B, T, H, D), _heads(P, q, H, "q"),
           _heads(P, k, H, "k"), _heads(P, v, H, "v"), int(attrs.get("chunk", 1)), scale,
           P.temp("scores", (B * H, k.shape[2]), np.float64),
           P.temp("acc", (B * H, D), np.float64))
    return out


@steps_for("relative_position_bias")
def build_relative_position_bias(P, node, args, attrs):
    from .kernels import relative_position as k_rel
    xq, xk, table = args
    T, S = xq.shape[-2], xk.shape[-2]
    offset = int(attrs.get("offset") or 0)
    lo, hi = -(offset + T - 1), S - 1 - offset          # every key - query distance met
    buckets = k_rel.bucket_table(lo, hi, bool(attrs.get("bidirectional", True)),
                                 table.shape[0], attrs.get("max_distance", 128))
    out = P.output()
    P.step(k_rel.relative_position_bias, out, table, buckets, lo, offset)
    return out


@steps_for("alibi")
def build_alibi(P, node, args, attrs):
    out = P.output()
    slopes = k_attn.alibi_slopes(attrs.get("heads", 1))
    P.step(k_attn.alibi, out, slopes, bool(attrs.get("symmetric")))
    return out


@steps_for("sinusoidal_positions")
def build_sinusoidal_positions(P, node, args, attrs):
    pos = args[0]
    out = P.output()
    P.step(k_pos.sinusoidal_positions, out.reshape(-1, out.shape[-1]),
           P.contiguous(pos, "c").reshape(-1), float(attrs.get("base", 10000.0)))
    return out


@steps_for("attention_mask")
def build_attention_mask(P, node, args, attrs):
    # depends on the sizes alone: made once, copied in by each run
    mask = np.ascontiguousarray(REFERENCE["attention_mask"](*args, **attrs))
    out = P.output()
    P.step(np.copyto, out, mask)
    return out


@steps_for("padding_mask")
def build_padding_mask(P, node, args, attrs):
    mask = args[0]
    out = P.output()
    ok = P.temp("ok", mask.shape, np.bool_)
    P.step(np.not_equal, mask, 0, ok)
    P.step(np.copyto, out, np.full((), -np.inf, out.dtype))
    P.step(_where, out, np.zeros((), out.dtype), ok[..., None, None, :])
    return out


def _where(out, value, where):
    np.copyto(out, value, where=where)


# ---- everything else: the reference kernel ---------------------------------------------------

def build_reference(P, node, args, attrs):
    fn = REFERENCE.get(node.op)
    if fn is None:
        raise ExecutionError(f"no kernel for op {node.op!r} ({node.id})")
    if node.dtype == "tuple":
        outs = tuple(P.output(i) for i in range(len(node.parts)))

        def run_tuple():
            for o, r in zip(outs, fn(*args, **attrs)):
                np.copyto(o, r, casting="unsafe")
        P.step(run_tuple, op=f"{node.op} (ref)")
        return outs
    out = P.output()
    P.step(lambda: np.copyto(out, fn(*args, **attrs), casting="unsafe"),
           op=f"{node.op} (ref)")
    return out
