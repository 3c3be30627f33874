"""ONNX translations of archc's ops, by op name: one rule per op of the registry (dsl/ops/).

A rule is `rule(e, node, args) -> tensor name | [names]`: `e` is the Emitter
(onnx_export.py: `e.op("MatMul", [a, b])`, constants, sizes at run time), `node` the archc
node (attrs, types), `args` the ONNX tensors of its arguments (a list of names for a tuple
argument). Rules use standard ONNX ops only, and compute what the op's NumPy reference
(`ref_<op>` in runtime/kernels/) computes. An op with no standard form is listed in
NOT_EXPORTABLE with the reason; tests/archc/test_onnx_rules.py fails on an op in neither.

This module does not import onnx: the registry test walks it where onnx is not installed.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .dsl.dims import dim_div

RULES: dict[str, Callable] = {}
NOT_EXPORTABLE: dict[str, str] = {
    "moe": "expert routing with a per-expert capacity keeps or drops a token by a running "
           "count over the sequence; archc has no ONNX form for it yet",
    "moe_router": "an MoE's chosen experts, made only by `archc run --tap` (which export "
                  "does not take), with the same capacity count as moe",
    "product_key_memory": "two-level top-k key search over product keys; archc has no ONNX "
                          "form for it yet",
    "chunked_cross_attention": "RETRO's chunk-shifted cross-attention over retrieved "
                               "neighbours; archc has no ONNX form for it yet",
}
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def exports(*names: str):
    """Register the decorated function as the ONNX rule of ops `names`."""
    def register(fn):
        for n in names:
            if n in RULES:
                raise RuntimeError(f"ONNX rule for {n!r} registered twice")
            RULES[n] = fn
        return fn
    return register


def _types(e, node):
    return [e.type(a) for a in e.g.args(node.id)]


# ---- element-wise ----------------------------------------------------------------------

BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div"}


@exports(*BINARY)
def _binary(e, node, args):
    a, b = (e.cast(x, t.dtype, node.dtype) for x, t in zip(args, _types(e, node)))
    return e.op(BINARY[node.op], [a, b])


def _silu(e, x):
    return e.op("Mul", [x, e.op("Sigmoid", [x])])


def _relu2(e, x):
    r = e.op("Relu", [x])
    return e.op("Mul", [r, r])


# unary ops as functions of one tensor: also the activations of fused products (act=)
UNARY: dict[str, Callable] = {
    "neg": lambda e, x: e.op("Neg", [x]),
    "relu": lambda e, x: e.op("Relu", [x]),
    "gelu": lambda e, x: e.op("Gelu", [x], approximate="none"),
    "gelu_tanh": lambda e, x: e.op("Gelu", [x], approximate="tanh"),
    "silu": _silu,
    "sigmoid": lambda e, x: e.op("Sigmoid", [x]),
    "tanh": lambda e, x: e.op("Tanh", [x]),
    "relu2": _relu2,
    "exp": lambda e, x: e.op("Exp", [x]),
    "sqrt": lambda e, x: e.op("Sqrt", [x]),
    "rsqrt": lambda e, x: e.op("Reciprocal", [e.op("Sqrt", [x])]),
    "square": lambda e, x: e.op("Mul", [x, x]),
}


@exports(*UNARY)
def _unary(e, node, args):
    return UNARY[node.op](e, args[0])


@exports("cast")
def _cast(e, node, args):
    return e.cast(args[0], _types(e, node)[0].dtype, node.dtype)


@exports("dropout")
def _dropout(e, node, args):
    return args[0]                       # inference: the identity (`archc run --train` only)


# ---- products and norms ----------------------------------------------------------------

def linear(e, x, w, b=None):
    y = e.op("MatMul", [x, w])
    return y if b is None else e.op("Add", [y, b])


def _swap_last(rank: int) -> list[int]:
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return perm


@exports("matmul")
def _matmul(e, node, args):
    (a, b), (ta, tb) = args, _types(e, node)
    a, b = e.cast(a, ta.dtype, node.dtype), e.cast(b, tb.dtype, node.dtype)
    if node.attrs.get("transpose_b"):
        b = e.op("Transpose", [b], perm=_swap_last(len(tb.shape)))
    return e.op("MatMul", [a, b])


@exports("linear")
def _linear(e, node, args):
    return linear(e, *args)


def activation(e, act: str, x: str) -> str:
    return UNARY[act](e, x)


def _glu(e, h, width, act: str):
    gate, up = e.op("Split", [h, e.ints([width, width])], n_out=2, axis=-1)
    return e.op("Mul", [activation(e, act, gate), up])


def _half(t) -> int:
    return dim_div(t.shape[1], 2)


@exports("linear_act")
def _linear_act(e, node, args):
    return activation(e, node.attrs.get("act", "relu"), linear(e, *args))


@exports("linear_glu")
def _linear_glu(e, node, args):
    w = _types(e, node)[1]
    return _glu(e, linear(e, *args), _half(w), node.attrs.get("act", "silu"))


@exports("ffn")
def _ffn(e, node, args):
    x, w1, w2, *biases = args
    a = node.attrs
    b1 = biases[0] if a.get("bias1") else None
    b2 = biases[-1] if a.get("bias2") else None
    h = linear(e, x, w1, b1)
    act = a.get("act", "relu")
    h = _glu(e, h, _half(_types(e, node)[1]), act) if a.get("glu") else activation(e, act, h)
    return linear(e, h, w2, b2)


def layernorm(e, x, w, b, eps):
    ins = [x, w] + ([b] if b is not None else [])
    return e.op("LayerNormalization", ins, axis=-1, epsilon=float(eps))


def rmsnorm(e, x, w, eps, dtype: str):
    ms = e.op("ReduceMean", [e.op("Mul", [x, x]), e.ints([-1])], keepdims=1)
    inv = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [ms, e.scalar(eps, dtype)])])])
    return e.op("Mul", [e.op("Mul", [x, inv]), w])


@exports("layernorm")
def _layernorm(e, node, args):
    return layernorm(e, args[0], args[1], args[2] if len(args) > 2 else None,
                     node.attrs.get("eps", 1e-5))


@exports("rmsnorm")
def _rmsnorm(e, node, args):
    return rmsnorm(e, args[0], args[1], node.attrs.get("eps", 1e-6), node.dtype)


def _in_dtype(e, node) -> str:
    return _types(e, node)[0].dtype


@exports("add_layernorm")
def _add_layernorm(e, node, args):
    s = e.op("Add", args[:2])
    return [s, layernorm(e, s, args[2], args[3] if len(args) > 3 else None,
                         node.attrs.get("eps", 1e-5))]


@exports("add_rmsnorm")
def _add_rmsnorm(e, node, args):
    s = e.op("Add", args[:2])
    return [s, rmsnorm(e, s, args[2], node.attrs.get("eps", 1e-6), _in_dtype(e, node))]


def softmax_or_zeros(e, x, axis: int, dtype: str) -> str:
    """Softmax whose rows with every entry -inf give zeros, not NaN (the reference's rule)."""
    p = e.op("Softmax", [x], axis=axis)
    return e.op("Where", [e.op("IsNaN", [p]), e.scalar(0, dtype), p])


@exports("softmax")
def _softmax(e, node, args):
    return softmax_or_zeros(e, args[0], node.attrs.get("axis", -1), node.dtype)


# ---- embeddings and positions ----------------------------------------------------------

@exports("embedding")
def _embedding(e, node, args):
    ids, table = args
    return e.op("Gather", [table, ids], axis=0)


def arange(e, start: str, length: str) -> str:
    """start, start+1, ... (length of them): int64; start and length 1-element tensors."""
    limit = e.op("Add", [start, length])
    return e.op("Range", [e.scalar_of(start), e.scalar_of(limit), e.scalar(1, "int64")])


def _offset(e, offset: int) -> str:
    """Where positions start: `offset`, after the cached tokens in a decode graph."""
    start = e.ints([int(offset)])
    return e.op("Add", [start, e.past_len()]) if e.decode else start


@exports("positions")
def _positions(e, node, args):
    a = node.attrs
    return arange(e, _offset(e, a.get("offset", 0)), e.axis_len(args[0], a.get("axis", -1)))


@exports("sinusoidal_positions")
def _sinusoidal(e, node, args):
    dim, base = node.attrs["dim"], node.attrs.get("base", 10000.0)
    freq = 1.0 / base ** (2 * np.arange(dim // 2, dtype=np.float64) / dim)
    angle = e.op("Mul", [e.op("Unsqueeze", [e.cast(args[0], "int64", "float64"), e.ints([-1])]),
                         e.const(freq)])                                   # (..., dim/2)
    pair = e.op("Concat", [e.op("Unsqueeze", [e.op(f, [angle]), e.ints([-1])])
                           for f in ("Sin", "Cos")], axis=-1)             # (..., dim/2, 2)
    shape = e.op("Concat", [e.shape(args[0]), e.ints([dim])], axis=0)
    return e.cast(e.op("Reshape", [pair, shape]), "float64", "float32")


def rope(e, x, positions, *, heads, head_dim, rotary_dim, theta, interleaved, offset, dtype,
         width):
    """x (..., T, H*D) with the first rotary_dim dims of every head rotated by position;
    positions (..., T) or None for offset + 0..T-1. Angles in float64, as the reference."""
    D = head_dim or width // heads
    r = rotary_dim or D
    inv_freq = theta ** (-np.arange(0, r, 2, dtype=np.float64) / r)        # (r/2,)
    if positions is None:
        positions = arange(e, _offset(e, offset), e.axis_len(x, -2))
    angle = e.op("Mul", [e.op("Unsqueeze", [e.cast(positions, "int64", "float64"),
                                            e.ints([-1])]), e.const(inv_freq)])
    angle = e.op("Unsqueeze", [angle, e.ints([-2])])                       # (..., T, 1, r/2)
    cos = e.cast(e.op("Cos", [angle]), "float64", dtype)
    sin = e.cast(e.op("Sin", [angle]), "float64", dtype)
    heads_shape = e.op("Concat", [e.shape(x, 0, -1), e.ints([heads, D])], axis=0)
    xh = e.op("Reshape", [x, heads_shape])                                 # (..., T, H, D)
    rot, rest = e.op("Split", [xh, e.ints([r, D - r])], n_out=2, axis=-1) if r < D \
        else (xh, None)
    if interleaved:                      # GPT-J: pairs (0, 1), (2, 3), ...
        pairs = e.op("Reshape", [rot, e.op("Concat", [e.shape(rot, 0, -1), e.ints([r // 2, 2])],
                                                  axis=0)])
        a, b = e.op("Split", [pairs, e.ints([1, 1])], n_out=2, axis=-1)
        cos1, sin1 = (e.op("Unsqueeze", [t, e.ints([-1])]) for t in (cos, sin))
        out = e.op("Concat", [e.op("Sub", [e.op("Mul", [a, cos1]), e.op("Mul", [b, sin1])]),
                              e.op("Add", [e.op("Mul", [b, cos1]), e.op("Mul", [a, sin1])])],
                   axis=-1)
        out = e.op("Reshape", [out, e.shape(rot)])
    else:                                # LLaMA / NeoX rotate_half: pairs (i, i + r/2)
        a, b = e.op("Split", [rot, e.ints([r // 2, r // 2])], n_out=2, axis=-1)
        out = e.op("Concat", [e.op("Sub", [e.op("Mul", [a, cos]), e.op("Mul", [b, sin])]),
                              e.op("Add", [e.op("Mul", [b, cos]), e.op("Mul", [a, sin])])],
                   axis=-1)
    if rest is not None:
        out = e.op("Concat", [out, rest], axis=-1)
    return e.op("Reshape", [out, e.shape(x)])


def _rope_attrs(a: dict, heads: int, dtype: str, width) -> dict:
    return dict(heads=heads, head_dim=a.get("head_dim"), rotary_dim=a.get("rotary_dim"),
                theta=a.get("theta", 10000.0), interleaved=a.get("interleaved", False),
                offset=a.get("offset", 0), dtype=dtype, width=width)


@exports("rope")
def _rope(e, node, args):
    x_t = _types(e, node)[0]
    return rope(e, args[0], args[1] if len(args) > 1 else None,
                **_rope_attrs(node.attrs, node.attrs.get("heads", 1), node.dtype, x_t.shape[-1]))


# ---- attention -------------------------------------------------------------------------

def visible(e, T: str, S: str, causal: bool, window) -> str | None:
    """(T, S) bool: may query i see key j, query i at absolute position S - T + i (the
    reference's `visible`); None when every key is visible."""
    if not causal and window is None:
        return None
    i = e.op("Unsqueeze", [arange(e, e.op("Sub", [S, T]), T), e.ints([1])])   # (T, 1)
    j = e.op("Unsqueeze", [arange(e, e.ints([0]), S), e.ints([0])])          # (1, S)
    conds = []
    if causal:
        conds.append(e.op("LessOrEqual", [j, i]))
    if window is not None:
        conds.append(e.op("Greater", [j, e.op("Sub", [i, e.ints([window])])]))
        if not causal:
            conds.append(e.op("Less", [j, e.op("Add", [i, e.ints([window])])]))
    ok = conds[0]
    for c in conds[1:]:
        ok = e.op("And", [ok, c])
    return ok


def attention_core(e, q, k, v, *, rank: int, heads: int, kv_heads: int, D: int, dtype: str,
                   scale, causal: bool = False, window=None, mask=None, bias=None,
                   allowed=None, cache: int | None = None):
    """softmax(q k^T * scale + bias, masked) v per head, as the reference computes it.
    q (..., T, H*D), k and v (..., S, Hkv*D); `mask` (..., S) int keys, `allowed` (...,
    T|1, S) bool keys per query; `cache` is the decode graph's cache index: k and v are
    then prefixed with past_* and given out as present_*."""
    perm = list(range(rank - 2)) + [rank - 1, rank - 2, rank]            # (.., T, H, D) -> (.., H, T, D)
    to_heads = lambda x, h: e.op("Transpose", [e.op("Reshape", [x, e.op(  # noqa: E731
        "Concat", [e.shape(x, 0, -1), e.ints([h, D])], axis=0)])], perm=perm)
    qh, kh, vh = to_heads(q, heads), to_heads(k, kv_heads), to_heads(v, kv_heads)
    if cache is not None:
        kh = e.op("Concat", [f"past_key_values.{cache}.key", kh], axis=-2)
        vh = e.op("Concat", [f"past_key_values.{cache}.value", vh], axis=-2)
        e.decode.presents += [(f"present.{cache}.key", kh), (f"present.{cache}.value", vh)]
    if heads != kv_heads:                # query head h reads K/V head h // (H / Hkv)
        kh, vh = (_repeat_heads(e, t, heads // kv_heads, rank) for t in (kh, vh))
    s = 1.0 / math.sqrt(D) if scale is None else float(scale)
    kt = e.op("Transpose", [kh], perm=_swap_last(rank + 1))
    scores = e.op("Mul", [e.op("MatMul", [qh, kt]), e.scalar(s, dtype)])  # (..., H, T, S)
    if bias is not None:
        scores = e.op("Add", [scores, bias])
    T, S = e.axis_len(qh, -2), e.axis_len(kh, -2)
    ok = visible(e, T, S, causal, window)
    if mask is not None:                 # (..., S) -> (..., 1, 1, S)
        real = e.op("Not", [e.op("Equal", [mask, e.scalar(0, "int64")])])
        keys = e.op("Unsqueeze", [real, e.ints([-2, -3])])
        ok = keys if ok is None else e.op("And", [ok, keys])
    if allowed is not None:              # (..., T|1, S) -> (..., 1, T|1, S)
        keys = e.op("Unsqueeze", [allowed, e.ints([-3])])
        ok = keys if ok is None else e.op("And", [ok, keys])
    if ok is not None:
        scores = e.op("Where", [ok, scores, e.scalar(-np.inf, dtype)])
    guard = mask is not None or bias is not None or allowed is not None   # may hide a row
    p = softmax_or_zeros(e, scores, -1, dtype) if guard else e.op("Softmax", [scores], axis=-1)
    out = e.op("Transpose", [e.op("MatMul", [p, vh])], perm=perm)          # (..., T, H, D)
    return e.op("Reshape", [out, e.shape(q)])


def _repeat_heads(e, t, group: int, rank: int) -> str:
    """(..., Hkv, S, D) -> (..., Hkv*group, S, D), each head repeated `group` times."""
    lead = e.shape(t, 0, -3)
    hkv, rest = e.shape(t, -3, -2), e.shape(t, -2)
    t5 = e.op("Unsqueeze", [t, e.ints([rank - 1])])                       # (..., Hkv, 1, S, D)
    full = e.op("Concat", [lead, hkv, e.ints([group]), rest], axis=0)
    big = e.op("Expand", [t5, full])
    return e.op("Reshape", [big, e.op("Concat", [lead, e.op("Mul", [hkv, e.ints([group])]),
                                                 rest], axis=0)])


def _attention(e, node, q, k, v, mask, bias):
    a = node.attrs
    q_t = _types(e, node)[0]
    heads = a.get("heads", 1)
    mask = None if mask is None else e.cast(mask, _types(e, node)[3].dtype, "int64")
    cache = e.decode.entries.get(node.id) if e.decode else None
    if cache is not None and mask is not None:
        from .dsl.errors import ArchError
        raise ArchError(f"no decode graph: the attention {node.scope or node.id} takes a "
                        "key mask, which would have to cover the keys in past_* too", node.span)
    return attention_core(e, q, k, v, rank=len(q_t.shape), heads=heads,
                          kv_heads=a.get("kv_heads") or heads, D=dim_div(q_t.shape[-1], heads),
                          dtype=node.dtype, scale=a.get("scale"), causal=a.get("causal", False),
                          window=a.get("window"), mask=mask, bias=bias, cache=cache)


@exports("attention")
def _attention_op(e, node, args):
    q, k, v, *rest = args
    mask = rest[0] if len(rest) > 0 else None
    bias = rest[1] if len(rest) > 1 else None
    return _attention(e, node, q, k, v, mask, bias)


@exports("rope_attention")
def _rope_attention(e, node, args):
    a = node.attrs
    q, k, v, *rest = args
    mask = rest.pop(0) if a.get("has_mask") else None
    bias = rest.pop(0) if a.get("has_bias") else None
    pos = rest.pop(0) if a.get("has_positions") else None
    types = _types(e, node)
    heads = a.get("heads", 1)
    qr = rope(e, q, pos, **_rope_attrs(a, heads, node.dtype, types[0].shape[-1]))
    kr = rope(e, k, pos, **_rope_attrs(a, a.get("kv_heads") or heads, node.dtype,
                                       types[1].shape[-1]))
    return _attention(e, node, qr, kr, v, mask, bias)


@exports("attention_mask")
def _attention_mask(e, node, args):
    q, k = args
    ok = visible(e, e.axis_len(q, -2), e.axis_len(k, -2), node.attrs.get("causal", False),
                 node.attrs.get("window"))
    if ok is None:                       # every key visible: zeros (T, S)
        shape = e.op("Concat", [e.axis_len(q, -2), e.axis_len(k, -2)], axis=0)
        return e.op("Expand", [e.scalar(0, node.dtype), shape])
    return e.op("Where", [ok, e.scalar(0, node.dtype), e.scalar(-np.inf, node.dtype)])


@exports("padding_mask")
def _padding_mask(e, node, args):
    mask_t = _types(e, node)[0]
    real = e.op("Not", [e.op("Equal", [e.cast(args[0], mask_t.dtype, "int64"),
                                        e.scalar(0, "int64")])])
    bias = e.op("Where", [real, e.scalar(0, node.dtype), e.scalar(-np.inf, node.dtype)])
    return e.op("Unsqueeze", [bias, e.ints([-2, -3])])                   # (..., 1, 1, S)


@exports("alibi")
def _alibi(e, node, args):
    from .runtime.kernels.attention import alibi_slopes
    heads = node.attrs.get("heads", 1)
    slopes = e.const((-alibi_slopes(heads)).astype(np.float32).reshape(1, heads, 1, 1))
    S = e.axis_len(args[0], -2)
    j = e.op("Cast", [arange(e, e.ints([0]), S)], to=1)                  # (S,) float
    if node.attrs.get("symmetric"):
        dist = e.op("Abs", [e.op("Sub", [e.op("Unsqueeze", [j, e.ints([1])]),
                                         e.op("Unsqueeze", [j, e.ints([0])])])])   # (S, S)
    else:
        last = e.op("Cast", [e.op("Sub", [S, e.ints([1])])], to=1)
        dist = e.op("Unsqueeze", [e.op("Sub", [last, j]), e.ints([0])])          # (1, S)
    return e.op("Mul", [slopes, dist])                                   # (1, H, 1|S, S)


@exports("relative_position_bias")
def _relative_position_bias(e, node, args):
    """T5's bucketed relative positions (the reference's relative_position_bucket: the log
    in float32, as in HF), looked up in the (buckets, H) table."""
    xq, xk, table = args
    a = node.attrs
    n_buckets = int(_types(e, node)[2].shape[0])
    T, S = e.axis_len(xq, -2), e.axis_len(xk, -2)
    i = arange(e, e.ints([int(a.get("offset", 0))]), T)
    j = arange(e, e.ints([0]), S)
    rel = e.op("Sub", [e.op("Unsqueeze", [j, e.ints([0])]), e.op("Unsqueeze", [i, e.ints([1])])])
    nb = n_buckets
    zero = e.scalar(0, "int64")
    if a.get("bidirectional", True):
        nb //= 2
        base = e.op("Mul", [e.op("Cast", [e.op("Greater", [rel, zero])], to=7),
                            e.scalar(nb, "int64")])
        n = e.op("Abs", [rel])
    else:
        base = None
        n = e.op("Neg", [e.op("Min", [rel, zero])])
    exact = nb // 2
    small = e.op("Less", [n, e.scalar(exact, "int64")])
    ratio = e.op("Log", [e.op("Div", [e.op("Cast", [n], to=1), e.scalar(exact, "float32")])])
    scale = np.float32(math.log(a.get("max_distance", 128) / exact))
    large = e.op("Mul", [e.op("Div", [ratio, e.scalar(scale, "float32")]),
                         e.scalar(nb - exact, "float32")])
    large = e.op("Cast", [e.op("Where", [small, e.scalar(0, "float32"), large])], to=7)
    large = e.op("Min", [e.op("Add", [large, e.scalar(exact, "int64")]),
                         e.scalar(nb - 1, "int64")])
    bucket = e.op("Where", [small, n, large])
    if base is not None:
        bucket = e.op("Add", [base, bucket])
    bias = e.op("Transpose", [e.op("Gather", [table, bucket], axis=0)], perm=[2, 0, 1])
    return e.op("Unsqueeze", [bias, e.ints([0])])                        # (1, H, T, S)


# ---- shapes ----------------------------------------------------------------------------

@exports("reshape")
def _reshape(e, node, args):
    return e.op("Reshape", [args[0], e.dims(list(node.attrs["shape"]))])


@exports("transpose")
def _transpose(e, node, args):
    perm = node.attrs.get("perm")
    rank = len(_types(e, node)[0].shape)
    return e.op("Transpose", [args[0]], perm=list(perm) if perm is not None else _swap_last(rank))


@exports("concat")
def _concat(e, node, args):
    xs = [e.cast(x, t.dtype, node.dtype) for x, t in zip(args, _types(e, node))]
    return e.op("Concat", xs, axis=node.attrs.get("axis", -1))


@exports("stack")
def _stack(e, node, args):
    axis = node.attrs.get("axis", 0) % len(node.shape)
    return e.op("Concat", [e.op("Unsqueeze", [x, e.ints([axis])]) for x in args], axis=axis)


@exports("split")
def _split(e, node, args):
    a = node.attrs
    sections, axis = a.get("sections", 2), a.get("axis", -1)
    if isinstance(sections, int):
        return e.op("Split", [args[0]], n_out=sections, axis=axis, num_outputs=sections)
    return e.op("Split", [args[0], e.dims(list(sections))], n_out=len(sections), axis=axis)


@exports("getitem")
def _getitem(e, node, args):
    return args[0][node.attrs.get("index", 0)]


@exports("slice")
def _slice(e, node, args):
    a = node.attrs
    step = a.get("step", 1) or 1
    start, stop = a.get("start"), a.get("stop")
    start = (0 if step > 0 else INT64_MAX) if start is None else start
    stop = (INT64_MAX if step > 0 else INT64_MIN) if stop is None else stop
    return e.op("Slice", [args[0], e.dim(start), e.dim(stop), e.ints([a.get("axis", 0)]),
                          e.ints([step])])


@exports("take")
def _take(e, node, args):
    a = node.attrs
    return e.op("Gather", [args[0], e.scalar(int(a.get("index", 0)), "int64")],
                axis=a.get("axis", 0))


# ---- memory layers ---------------------------------------------------------------------

@exports("prepend_memory")
def _prepend_memory(e, node, args):
    x, slots = args
    x_t, s_t = _types(e, node)
    slots = e.cast(slots, s_t.dtype, x_t.dtype)
    shape = e.op("Concat", [e.shape(x, 0, -2), e.shape(slots)], axis=0)
    return e.op("Concat", [e.op("Expand", [slots, shape]), x], axis=-2)


@exports("memory_mask")
def _memory_mask(e, node, args):
    mask = args[0]
    shape = e.op("Concat", [e.shape(mask, 0, -1), e.ints([node.attrs.get("slots", 1)])], axis=0)
    ones = e.op("Expand", [e.scalar(1, node.dtype), shape])
    return e.op("Concat", [ones, mask], axis=-1)


# ---- Longformer ------------------------------------------------------------------------

@exports("longformer_attention")
def _longformer_attention(e, node, args):
    """The reference's dense form: local queries see the band |i - j| <= window/2 (less the
    global keys) and every global key; global queries (own projections) see every key."""
    q, k, v, qg, kg, vg, glob = args[:7]
    mask = args[7] if len(args) > 7 else None
    a = node.attrs
    heads = a.get("heads", 1)
    q_t = _types(e, node)[0]
    D = dim_div(q_t.shape[-1], heads)
    dtype = node.dtype
    types = _types(e, node)
    is_glob = e.op("Not", [e.op("Equal", [e.cast(glob, types[6].dtype, "int64"),
                                          e.scalar(0, "int64")])])       # (B, T)
    real = None if mask is None else e.op("Not", [e.op("Equal", [
        e.cast(mask, types[7].dtype, "int64"), e.scalar(0, "int64")])])
    T = e.axis_len(q, -2)
    pos = arange(e, e.ints([0]), T)
    dist = e.op("Abs", [e.op("Sub", [e.op("Unsqueeze", [pos, e.ints([1])]),
                                     e.op("Unsqueeze", [pos, e.ints([0])])])])
    band = e.op("LessOrEqual", [dist, e.scalar(a.get("window", 2) // 2, "int64")])  # (T, T)
    g_keys = e.op("Unsqueeze", [is_glob, e.ints([1])])                    # (B, 1, T)
    local = e.op("Or", [e.op("And", [band, e.op("Not", [g_keys])]), g_keys])
    all_keys = None if real is None else e.op("Unsqueeze", [real, e.ints([1])])   # (B, 1, T)
    if all_keys is not None:
        local = e.op("And", [local, all_keys])
    core = dict(rank=3, heads=heads, kv_heads=heads, D=D, dtype=dtype, scale=a.get("scale"))
    out = attention_core(e, q, k, v, allowed=local, **core)
    out_g = attention_core(e, qg, kg, vg, allowed=all_keys, **core)
    rows = e.op("Unsqueeze", [is_glob, e.ints([-1])])                    # (B, T, 1)
    out = e.op("Where", [rows, out_g, out])
    if real is not None:
        out = e.op("Where", [e.op("Unsqueeze", [real, e.ints([-1])]), out,
                             e.scalar(0, dtype)])
    return out
