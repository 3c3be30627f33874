"""Fused ops: what the compiler's fusion passes (compiler/passes/fuse_*.py) rewrite into.

Users may write them too, but normally they appear only after the pipeline. Each has a
NumPy reference beside its unfused twin (`ref_add_layernorm` in runtime/kernels/norm.py,
`ref_linear_act`, `ref_linear_glu`, `ref_ffn` in runtime/kernels/ffn.py,
`ref_rope_attention` in runtime/kernels/attention.py); fast kernels
must keep these names, argument orders and attributes.

    add_layernorm(x, r, weight, bias?, eps)  -> (s, y)   s = x + r, y = layernorm(s)
    add_rmsnorm(x, r, weight, eps)           -> (s, y)   s = x + r, y = rmsnorm(s)
    linear_act(x, weight, bias?, act)        -> act(x @ weight + bias)
    linear_glu(x, weight, bias?, act)        -> act(g) * u, [g | u] = x @ weight + bias
    ffn(x, w1, w2, *biases, act, glu, bias1, bias2)
                                             -> linear(linear_act|linear_glu(x, w1, b1), w2, b2)
    rope_attention(q, k, v, mask?, bias?, positions?, ...)
                                             -> attention(rope(q), rope(k), v, mask?, bias?)

Contract for the residual ops: x and r have the same shape (no broadcasting) and `x` is
dead after the op (the fusion checks this), so a kernel may write `s` over x's buffer,
as llm.c's fused residual kernel does. Both outputs are read through getitem 0 / 1.

`linear_glu` weights are the gate and up projections concatenated along the output axis,
weight = concat([W_gate, W_up], axis=-1) of shape (in, 2F): the first F columns are the
gate (the half that goes through `act`), the last F the up projection.
"""
from __future__ import annotations

from ..dims import dim_add, dim_div, dim_mul, numel, shape_str
from ..scratch import Arg, copy_unless_contiguous, copy_unless_viewable, rows
from . import OPS, TT, ShapeError, activations, is_float, op
from .attention import attention_scratch
from .linalg import product_scratch
from .position import rope_scratch



def _check_add(x: TT, r: TT, w: TT, b: TT | None, what: str) -> TT:
    if not is_float(x.dtype) or not x.shape:
        raise ShapeError(f"{what} needs a float tensor of rank >= 1, got {x}", arg=0)
    if tuple(x.shape) != tuple(r.shape) or x.dtype != r.dtype:
        raise ShapeError(f"{what}: x {x} and residual {r} must have the same type", arg=1)
    for p, k in ((w, 2), (b, 3)):
        if p is not None and tuple(p.shape) != (x.shape[-1],):
            raise ShapeError(f"{what}: weight/bias must have shape [{x.shape[-1]}], got "
                             f"{shape_str(p.shape)}", arg=k)
    return x


def _residual_flops(per_elem: int):
    def flops(out, x: TT, *_rest, **_attrs):
        return dim_mul(per_elem + 1, numel(x.shape))
    return flops


ADD_NORM = {"norm": True, "fused": True, "per_position": (0, 1), "inplace_part": (0, 0)}


def _add_norm_scratch(node, args, cache):
    # the kernel reads both summands as contiguous rows
    return copy_unless_contiguous("x", args[0]) + copy_unless_contiguous("r", args[1])
FUSED_PRODUCT = {"matmul": True, "fused": True, "per_position": (0,), "weight_args": (1,)}


@op("add_layernorm", inputs=("x", "residual", "weight", "bias?"), attrs={"eps": 1e-5},
    flops=_residual_flops(8), traits=ADD_NORM, scratch=_add_norm_scratch)
def add_layernorm(x: TT, r: TT, w: TT, b: TT | None = None, eps: float = 1e-5):
    """add_layernorm(x, residual, weight, bias?, eps) -> (x + residual, layernorm(x + residual))"""
    t = _check_add(x, r, w, b, "add_layernorm")
    return (t, t)


@op("add_rmsnorm", inputs=("x", "residual", "weight"), attrs={"eps": 1e-6},
    flops=_residual_flops(5), traits=ADD_NORM, scratch=_add_norm_scratch)
def add_rmsnorm(x: TT, r: TT, w: TT, eps: float = 1e-6):
    """add_rmsnorm(x, residual, weight, eps) -> (x + residual, rmsnorm(x + residual))"""
    t = _check_add(x, r, w, None, "add_rmsnorm")
    return (t, t)


def _check_act(act: str) -> None:
    if act not in activations():
        raise ShapeError(f"unknown activation {act!r}; expected one of "
                         f"{', '.join(activations())}")


def _linear_out(x: TT, w: TT, b: TT | None, what: str, out_cols) -> TT:
    if len(w.shape) != 2:
        raise ShapeError(f"{what}: weight must be 2-D (in, out), got {shape_str(w.shape)}", arg=1)
    if not x.shape or x.shape[-1] != w.shape[0]:
        raise ShapeError(f"{what}: input {x} does not match weight {shape_str(w.shape)}", arg=1)
    if b is not None and tuple(b.shape) != (w.shape[1],):
        raise ShapeError(f"{what}: bias must have shape [{w.shape[1]}], got "
                         f"{shape_str(b.shape)}", arg=2)
    return TT(tuple(x.shape[:-1]) + (out_cols,), x.dtype)


def _mm_flops(x: TT, w: TT, bias: bool) -> object:
    rows = numel(x.shape[:-1])
    f = dim_mul(2, dim_mul(rows, dim_mul(w.shape[0], w.shape[1])))
    return dim_add(f, dim_mul(rows, w.shape[1])) if bias else f


def _linear_act_flops(out: TT, x: TT, w: TT, *bias, **_attrs):
    return dim_add(_mm_flops(x, w, bool(bias)), dim_mul(4, numel(out.shape)))


@op("linear_act", inputs=("x", "weight", "bias?"), attrs={"act": "relu"},
    flops=_linear_act_flops, traits=FUSED_PRODUCT, scratch=product_scratch)
def linear_act(x: TT, w: TT, b: TT | None = None, act: str = "relu") -> TT:
    """linear_act(x, weight, bias?, act) = act(x @ weight + bias), weight (in, out)"""
    _check_act(act)
    return _linear_out(x, w, b, "linear_act", w.shape[1] if len(w.shape) == 2 else 0)


def _half(w: TT, what: str):
    half = dim_div(w.shape[1], 2) if len(w.shape) == 2 else None
    if half is None:
        raise ShapeError(f"{what}: weight {shape_str(w.shape)} must be (in, 2F), gate and up "
                         "concatenated", arg=1)
    return half


def _linear_glu_scratch(node, args, cache):
    # the merged product [gate | up] (N, 2F) before the gated activation
    x, w = args[:2]
    return copy_unless_contiguous("x", x) + [("h", (rows(x), w.shape[1]), node.dtype)]


@op("linear_glu", inputs=("x", "weight", "bias?"), attrs={"act": "silu"},
    flops=_linear_act_flops, traits=FUSED_PRODUCT, scratch=_linear_glu_scratch)
def linear_glu(x: TT, w: TT, b: TT | None = None, act: str = "silu") -> TT:
    """linear_glu(x, weight, bias?, act) = act(g) * u with [g | u] = x @ weight + bias,
    weight (in, 2F) = gate and up projections concatenated on the output axis"""
    _check_act(act)
    return _linear_out(x, w, b, "linear_glu", _half(w, "linear_glu"))


def _ffn_flops(out: TT, x: TT, w1: TT, w2: TT, *biases, bias1=False, bias2=False, **_):
    return dim_add(dim_add(_mm_flops(x, w1, bias1), _mm_flops(TT(x.shape[:-1] + (w2.shape[0],),
                                                                    x.dtype), w2, bias2)),
                   dim_mul(4, numel(x.shape[:-1] + (w1.shape[1],))))


def _ffn_scratch(node, args, cache):
    # the hidden activations (N, F), and the merged [gate | up] when gated
    x, w1, w2 = args[:3]
    out = copy_unless_contiguous("x", x) + [("hidden", (rows(x), w2.shape[0]), node.dtype)]
    if node.attrs.get("glu"):
        out.append(("h", (rows(x), w1.shape[1]), node.dtype))
    return out


@op("ffn", inputs=("x", "w1", "w2", "*biases"),
    attrs={"act": "relu", "glu": False, "bias1": False, "bias2": False},
    flops=_ffn_flops, traits={**FUSED_PRODUCT, "weight_args": (1, 2)}, scratch=_ffn_scratch)
def ffn(x: TT, w1: TT, w2: TT, *biases: TT, act: str = "relu", glu: bool = False,
        bias1: bool = False, bias2: bool = False) -> TT:
    """ffn(x, w1, w2, b1?, b2?, act, glu, bias1, bias2): a whole feed-forward block,
    linear(linear_act(x, w1, b1, act), w2, b2), or with glu=true linear_glu for the first
    half (w1 of shape (in, 2F)). The biases present follow w2 in order b1, b2, as flagged by
    bias1/bias2."""
    _check_act(act)
    if len(biases) != int(bool(bias1)) + int(bool(bias2)):
        raise ShapeError(f"ffn: {len(biases)} biases given but bias1={bias1}, bias2={bias2}")
    b1 = biases[0] if bias1 else None
    b2 = biases[-1] if bias2 else None
    hidden_cols = _half(w1, "ffn") if glu else (w1.shape[1] if len(w1.shape) == 2 else 0)
    _linear_out(x, w1, b1, "ffn (first linear)", w1.shape[1] if len(w1.shape) == 2 else 0)
    h = TT(tuple(x.shape[:-1]) + (hidden_cols,), x.dtype)
    return _linear_out(h, w2, b2, "ffn (second linear)", w2.shape[1] if len(w2.shape) == 2 else 0)


ROPE_ATTRS = ("theta", "rotary_dim", "interleaved", "offset", "head_dim")


def _rope_attention_scratch(node, args, cache):
    # rotated q and k, positions and their cos/sin, then attention's own scratch (the
    # rotated copies are contiguous, so attention copies at most v)
    q, k, v, *extra = args
    mask = extra.pop(0) if node.attrs.get("has_mask") else None
    biased = bool(node.attrs.get("has_bias"))
    if biased:
        extra.pop(0)
    out = [("q_rot", q.shape, q.dtype), ("k_rot", k.shape, k.dtype)]
    out += rope_scratch(node, q, extra[0] if node.attrs.get("has_positions") else None)
    out += copy_unless_viewable("rope_q", q) + copy_unless_viewable("rope_k", k)
    return out + attention_scratch(node, Arg(q.shape, q.dtype), Arg(k.shape, k.dtype), v, mask,
                                   cache, biased)


@op("rope_attention", inputs=("q", "k", "v", "*extra"),
    attrs={"heads": 1, "kv_heads": None, "causal": False, "window": None, "scale": None,
           "cache": False, "layer": None, "head_dim": None, "rotary_dim": None,
           "theta": 10000.0, "interleaved": False, "offset": 0,
           "has_mask": False, "has_bias": False, "has_positions": False},
    flops=lambda out, q, k, *rest, **a: dim_add(
        OPS["attention"].flops(out, q, k, heads=a.get("heads", 1)),
        dim_mul(3, dim_add(numel(q.shape), numel(k.shape)))),
    traits=("attention", "fused", "caches_kv", "composite"), scratch=_rope_attention_scratch)
def rope_attention(q: TT, k: TT, v: TT, *extra: TT, has_mask=False, has_bias=False,
                   has_positions=False, head_dim=None, rotary_dim=None, theta=10000.0,
                   interleaved=False, offset=0, **attn):
    """rope_attention(q, k, v, mask?, bias?, positions?, <attention attrs>, head_dim,
    rotary_dim, theta, interleaved, offset, has_mask, has_bias, has_positions) =
    attention(rope(q), rope(k), v, mask, bias): RoPE applied inside the attention kernel,
    q rotated with `heads` heads and k with `kv_heads`. The optional tensors present follow
    v in the order mask, bias, positions, as flagged by has_mask/has_bias/has_positions."""
    if len(extra) != int(bool(has_mask)) + int(bool(has_bias)) + int(bool(has_positions)):
        raise ShapeError(f"rope_attention: {len(extra)} extra tensors but has_mask={has_mask},"
                         f" has_bias={has_bias}, has_positions={has_positions}")
    rest = list(extra)
    mask = rest.pop(0) if has_mask else None
    bias = rest.pop(0) if has_bias else None
    pos = rest.pop(0) if has_positions else None
    rope_attrs = dict(head_dim=head_dim, rotary_dim=rotary_dim, theta=theta,
                      interleaved=interleaved, offset=offset)
    heads = attn.get("heads", 1)
    kv_heads = attn.get("kv_heads") or heads
    OPS["rope"].infer(q, pos, heads=heads, **rope_attrs)
    OPS["rope"].infer(k, pos, heads=kv_heads, **rope_attrs)
    return OPS["attention"].infer(q, k, v, mask, bias, **attn)
