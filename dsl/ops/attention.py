"""Attention: the scaled dot-product core (after the q/k/v projections) and ALiBi biases.

    attention(q, k, v, mask?, bias?)   q: (B, T, H*D)  k, v: (B, S, Hkv*D)  -> (B, T, H*D)

Query head h reads key/value head h // (H / Hkv): Hkv = H is multi-head, Hkv = 1 is
multi-query, anything between is grouped-query. With T < S (decoding with a cache) query i
sits at absolute position S - T + i, so `causal` and `window` stay right. Leading dims
other than B are allowed: every dim before the last two is a batch dim.
"""
from __future__ import annotations

from ..dims import DimLike, dim_add, dim_div, dim_mul, numel, shape_str
from ..scratch import LANES, Arg, Cache, Scratch, copy_unless_viewable
from . import TT, ShapeError, broadcast, is_float, op

# More query rows than this go through BLAS products (a prompt), fewer through the per-row
# kernel (decoding): see attention_path.
PREFILL_ROWS = 4


def attention_path(T: int, cache: Cache | None, biased: bool) -> str:
    """Which compiled attention runs for T query rows, hence the scratch it needs: the
    scratch rule below and the step builders (runtime/steps/attention.py) both ask this.

        prompt         no cache, a prompt: BLAS products per (batch, head)
        transient      no cache, a few rows: a transient cache and the per-row kernel
        cross_prompt   cached cross-attention (keys laid out once), a prompt: BLAS
        cross_decode   cached cross-attention, a few rows: the per-row kernel
        ring_prompt    a sliding window's ring, a prompt without a score bias: the ring's
                       keys in position order, the new keys after them, BLAS over that
        ring_prefill   a ring, T > 1 otherwise: the same layout, the per-row kernel
        cached_prompt  a full-context cache, a prompt: BLAS over keys 0..pos+T-1
        decode         a cache, a few rows (a ring's one new token): the per-row kernel
    """
    prompt = T > PREFILL_ROWS
    if cache is None:
        return "prompt" if prompt else "transient"
    if cache.cross:
        return "cross_prompt" if prompt else "cross_decode"
    if cache.ring and prompt and not biased:
        return "ring_prompt"
    if cache.ring and T > 1:
        return "ring_prefill"
    return "cached_prompt" if prompt and not cache.ring else "decode"


# query rows per block of a masked prompt's products: each block multiplies only the keys
# some row of it sees (causal T = S: about half the products)
PROMPT_BLOCK = 64
# at most this many rows per block of an unmasked prompt: a lane's probabilities are
# (rows, keys), one block per lane, so the plan grows with the lanes times this, not with
# T (a block packs the head's K and V once: 1-3% of its products at 128 rows)
PROMPT_ROWS = 128
# a prompt's products go through 16-column panels of K^T and V (runtime/kernels/
# microkernel.py): the packed panel's width
PANEL = 16


def prompt_rows(T: int, causal: bool, window: int) -> int:
    """Query rows per block of a prompt's attention (runtime/kernels/prefill.py): a lane
    works through its heads one block at a time, in its own `rows` rows of probabilities.
    Under a causal or window mask PROMPT_BLOCK rows, else the whole head up to PROMPT_ROWS
    (a short prompt's head in one block: cut between the lanes, 15 rows as 7 + 7 + 1 had
    packed its K and V three times)."""
    return min(PROMPT_BLOCK if causal or window else PROMPT_ROWS, T)


def prompt_scratch(node, T: int, width: int, D: int, dtype: str) -> Scratch:
    """A prompt's attention over `width` keys: per lane, a block's probabilities and, for
    float32, the micro-kernel's panel of K^T or V (depth up to max(D, width))."""
    rows = prompt_rows(T, bool(node.attrs.get("causal")), int(node.attrs.get("window") or 0))
    out = [("probs", (LANES, rows, width), dtype)]
    if dtype == "float32":
        out.append(("panels", (LANES, max(D, width), PANEL), "float32"))
    return out


def attention_scratch(node, q: Arg, k: Arg, v: Arg, mask: Arg | None, cache: Cache | None,
                      biased: bool) -> Scratch:
    """Scratch of the attention path this node takes (q, k, v: (B, T|S, heads*D)):
    contiguous copies of q/k/v that do not view as heads, then the path's own buffers."""
    B, T, C = q.shape
    S = k.shape[1]
    H = node.attrs["heads"]
    Hkv = node.attrs.get("kv_heads") or H
    D = C // H
    out = copy_unless_viewable("q", q) + copy_unless_viewable("k", k) + \
        copy_unless_viewable("v", v)
    per_row = [("scores", (B * H, S), "float64"), ("acc", (B * H, D), "float64")]
    path = attention_path(T, cache, biased)
    if cache is None and mask is not None:
        out.append(("mask", mask.shape, "bool"))
    if path == "prompt" or path == "cross_prompt":
        return out + prompt_scratch(node, T, S, D, q.dtype)
    if path == "transient":
        return out + [("kc", (B, Hkv, S, D), q.dtype), ("vc", (B, Hkv, S, D), q.dtype),
                      ("kpos", (S,), "int64")] + per_row
    if path == "cross_decode":
        return out + per_row
    slots = cache.slots
    if path in ("ring_prompt", "ring_prefill"):
        n = slots + T
        out += [("ring_k", (B, Hkv, n, D), q.dtype), ("ring_v", (B, Hkv, n, D), q.dtype),
                ("ring_pos", (n,), "int64")]
        if path == "ring_prompt":
            return out + prompt_scratch(node, T, n, D, q.dtype)
        return out + [("scores", (B * H, n), "float64"), ("acc", (B * H, D), "float64")]
    if path == "cached_prompt":
        return out + prompt_scratch(node, T, slots, D, q.dtype)
    return out + [("scores", (B * H, slots), "float64"), ("acc", (B * H, D), "float64")]


def _attention_scratch(node, args: list[Arg], cache: Cache | None) -> Scratch:
    mask = args[3] if len(args) > 3 else None
    return attention_scratch(node, args[0], args[1], args[2], mask, cache, len(args) > 4)


def _heads(name: str, value, arg_what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ShapeError(f"attention: `{name}` must be a positive whole number, got {value!r}"
                         f" ({arg_what})")
    return value


def _attention_flops(out: TT, q: TT, k: TT, *rest, heads=1, **_attrs) -> DimLike:
    # QK^T and PV are 2*T*S*D MACs per head each; softmax ~5 per score
    S = k.shape[-2]
    scores = dim_mul(dim_div(numel(out.shape), q.shape[-1]) or 1, dim_mul(S, heads))
    return dim_add(dim_mul(4, dim_mul(numel(out.shape), S)), dim_mul(5, scores))


@op("attention", inputs=("q", "k", "v", "mask?", "bias?"),
    attrs={"heads": 1, "kv_heads": None, "causal": False, "window": None, "scale": None,
           "cache": False, "layer": None},
    flops=_attention_flops, traits=("attention", "caches_kv"), scratch=_attention_scratch)
def attention(q: TT, k: TT, v: TT, mask: TT | None = None, bias: TT | None = None,
              heads: int = 1, kv_heads: int | None = None, causal: bool = False,
              window: int | None = None, scale: float | None = None, cache: bool = False,
              layer: int | None = None) -> TT:
    """attention(q, k, v, mask?, bias?, heads, kv_heads=heads, causal=false, window=none,
    scale=1/sqrt(D)): softmax(q k^T * scale + bias, masked) v per head. `mask` (B, S) is
    true/1 where a key may be attended; `bias` broadcasts to (B, H, T, S). A query row with
    every key masked gets zeros (softmax over an empty set is defined as 0, not NaN).
    `cache`/`layer` only declare a KV cache for the compiler to plan."""
    H = _heads("heads", heads, "the number of query heads")
    Hkv = H if kv_heads is None else _heads("kv_heads", kv_heads, "the number of K/V heads")
    if H % Hkv:
        raise ShapeError(f"attention: heads={H} is not a multiple of kv_heads={Hkv}",
                         hint="each K/V head serves an equal group of query heads")
    for i, (t, what) in enumerate(((q, "q"), (k, "k"), (v, "v"))):
        if len(t.shape) < 2 or not is_float(t.dtype):
            raise ShapeError(f"attention: {what} must be a float tensor (B, T, heads*D), "
                             f"got {t}", arg=i)
    D = dim_div(q.shape[-1], H)
    if D is None:
        raise ShapeError(f"attention: q has {q.shape[-1]} features, not divisible into "
                         f"heads={H}", arg=0)
    if k.shape[-1] != dim_mul(Hkv, D):
        raise ShapeError(f"attention: k {shape_str(k.shape)} should have kv_heads*D = {Hkv}*{D}"
                         f" = {dim_mul(Hkv, D)} features (q is {shape_str(q.shape)}, "
                         f"heads={H})", arg=1)
    if tuple(v.shape) != tuple(k.shape):
        raise ShapeError(f"attention: v {shape_str(v.shape)} must have the shape of k "
                         f"{shape_str(k.shape)}", arg=2)
    if len(k.shape) != len(q.shape) or tuple(k.shape[:-2]) != tuple(q.shape[:-2]):
        raise ShapeError(f"attention: batch dims of q {shape_str(q.shape)} and k "
                         f"{shape_str(k.shape)} differ", arg=1)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window <= 0):
        raise ShapeError(f"attention: window must be a positive whole number or none, "
                         f"got {window!r}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise ShapeError(f"attention: scale must be a number or none, got {scale!r}")
    S = k.shape[-2]
    if mask is not None:
        want = tuple(q.shape[:-2]) + (S,)
        if mask.dtype not in ("bool", "int64") or tuple(mask.shape) != want:
            raise ShapeError(f"attention: mask must be bool or int of shape {shape_str(want)} "
                             f"(batch, keys), got {mask}", arg=3)
    if bias is not None:
        full = tuple(q.shape[:-2]) + (H, q.shape[-2], S)
        if not is_float(bias.dtype) or len(bias.shape) > len(full):
            raise ShapeError(f"attention: bias must be a float tensor broadcastable to "
                             f"{shape_str(full)}, got {bias}", arg=4)
        try:
            got = broadcast(bias.shape, full)
        except ShapeError:
            got = None
        if got != full:
            raise ShapeError(f"attention: bias {shape_str(bias.shape)} does not broadcast to "
                             f"the scores {shape_str(full)} (batch, heads, queries, keys)", arg=4)
    return TT(tuple(q.shape), q.dtype)


@op("alibi", inputs=("x",), attrs={"heads": 1, "symmetric": False},
    traits=("position", "position_bias"))
def alibi(x: TT, heads: int = 1, symmetric: bool = False) -> TT:
    """alibi(x, heads, symmetric=false): ALiBi score bias for keys x (B, S, C). Causal form
    (1, heads, 1, S): -slope_h * (S-1-j), which equals the paper's -slope_h * (i - j) up to
    a per-row constant that softmax ignores. symmetric=true: (1, heads, S, S) with
    -slope_h * |i - j| (bidirectional self-attention). Slopes: 2^(-8 h / heads), h = 1..
    (the paper's interpolation for heads not a power of two)."""
    if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
        raise ShapeError(f"alibi: heads must be a positive whole number, got {heads!r}")
    if len(x.shape) < 2:
        raise ShapeError(f"alibi: x must be (B, S, C) to give the key length, got {x}", arg=0)
    S = x.shape[-2]
    return TT((1, heads, S if symmetric else 1, S), "float32")
