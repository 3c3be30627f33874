"""fuse_attention: the scaled dot-product written out becomes one attention op; one
projection matmul for Q, K and V; RoPE inside the attention op.

    before (per-head tensors, as lower_layers writes attention out, or by hand in .arch)
    qh = transpose(reshape(q, [*L, T, H, D]))         kt: keys (*L, H, D, S), via transposes
    s = matmul(qh, kt) * scale                            or matmul(.., transpose_b=true);
        + bias? + attention_mask(q, k, causal, window)?   GQA heads repeated by stack+reshape
        + padding_mask(mask)?
    o = matmul(softmax(s), vh)
    reshape(transpose(o), [*L, T, H*D])
                                              after
                                              attention(q, k, v, mask?, bias?, heads=H,
                                                        kv_heads, causal, window, scale)

    Tensors that are never split into heads fuse as one head (heads=1, every leading dim a
    batch dim). `scale` is None when it is 1/sqrt(D) (the op's default), 1.0 without a
    scale; `cache`/`layer` come back from lower_layers' record (graph.meta), else
    cache=true (the Attention layer's default) and the repeat index of the scope.

    q = linear(x, Wq, bq)                     W = concat(Wq, Wk, Wv)      (parameter-derived)
    k = linear(x, Wk, bk)                     qkv = linear(x, W, concat(bq, bk, bv))
    v = linear(x, Wv, bv)                     q, k, v = split(qkv, [H*D, Hkv*D, Hkv*D])
    attention(q, k, v, ...)                   attention(q, k, v, ...)

    cross-attention (q from x, k/v from an encoder output e): K and V merge into one
    linear(e, concat(Wk, Wv)); Q stays.

    attention(rope(q, p), rope(k, p), v, mask?, bias?)
                                              rope_attention(q, k, v, mask?, bias?, p?)

The projections may sit behind `rope` (rope(linear(x, Wq))); the merge looks through it.
GQA/MQA merge too: the split sizes follow the weights. The concatenated weights are
parameter-derived nodes, built once when weights load (see compiler/ir.py).

Rejected (listed by `--explain`): a softmax, score sum, scale or q k^T product also read
elsewhere; a scale that is not a constant scalar; q, k, v not split into heads the same
way; an output not merged back from heads; two biases or masks of one kind; a score bias
without a padding mask (the op's bias follows its mask). For the merge: a projection also
read elsewhere; projections of different dtypes; biases on some projections only; RoPE on
q and k with different settings or positions.

Requires: simplify ran (projections are `linear`). Ensures: the same outputs; coverage
"attention" = (attention ops at the end, those plus the written-out candidates rejected),
"QKV projections" = (attention ops whose projections merged, attention ops).
"""
from __future__ import annotations

import math

import numpy as np

from ...dsl.graph import Graph
from ...dsl.ops import ShapeError
from ...dsl.ops.fused import ROPE_ATTRS
from ..heads import Heads, operand_heads, perm_of
from ..ir import PassResult, common_scope, emit, where
from ..patterns import Pat, Reject, Rule, RewriteLog, any_, explain, rewrite
from .lower_layers import META_KEY


def _proj(g: Graph, nid: str) -> tuple[str | None, str]:
    """(the rope node or None, the projection node) feeding an attention argument."""
    node = g.node(nid)
    if node.op == "rope" and g.n_uses(nid) == 1:
        return nid, g.args(nid)[0]
    return None, nid


def _merge(g: Graph, projs: list[str], attn, what: str) -> list[str] | Reject | None:
    """Merge linear projections of one input into one linear + split; new part ids."""
    nodes = [g.node(p) for p in projs]
    if any(n.op != "linear" for n in nodes):
        return None
    for n in nodes:
        if g.n_uses(n.id) != 1:
            return Reject(f"{what} at {where(attn)}: projection {where(n)} has a second "
                          f"consumer")
    xs = {g.args(n.id)[0] for n in nodes}
    if len(xs) != 1:
        return None
    if len({n.dtype for n in nodes}) != 1:
        return Reject(f"{what} at {where(attn)}: projections have different dtypes")
    nbias = {len(g.args(n.id)) for n in nodes}
    if len(nbias) != 1:
        return Reject(f"{what} at {where(attn)}: only some projections have a bias")
    x = xs.pop()
    scope = common_scope([n.scope for n in nodes]) or attn.scope
    label = "qkv" if len(nodes) == 3 else "kv"
    prefix = f"{scope}.{label}" if scope else label
    w = emit(g, "concat", [g.args(n.id)[1] for n in nodes], {"axis": -1}, scope=scope,
             span=attn.span, name=f"{prefix}_weight")
    args = [x, w]
    if nbias.pop() == 3:
        args.append(emit(g, "concat", [g.args(n.id)[2] for n in nodes], {"axis": -1},
                         scope=scope, span=attn.span, name=f"{prefix}_bias"))
    fused = emit(g, "linear", args, scope=scope, span=attn.span, name=prefix)
    sizes = [n.shape[-1] for n in nodes]
    return emit(g, "split", [fused], {"sections": sizes, "axis": -1}, scope=scope,
                span=attn.span, name=f"{prefix}_split")


def _rewire(g: Graph, rope: str | None, new_input: str) -> str:
    """Rebuild a projection's rope (if any) on top of its merged part."""
    if rope is None:
        return new_input
    r = g.node(rope)
    return emit(g, "rope", [new_input] + g.args(rope)[1:], r.attrs, scope=r.scope, span=r.span)


def _merge_projections(g: Graph, m) -> str | Reject | None:
    attn = g.node(m["attn"])
    q, k, v, *rest = g.args(attn.id)
    (rq, pq), (rk, pk), (_, pv) = _proj(g, q), _proj(g, k), (None, v)
    if g.node(pq).op != "linear" or g.node(pk).op != "linear" or g.node(pv).op != "linear":
        return Reject(f"attention at {where(attn)}: q/k/v are not all linear projections")
    same_q = g.args(pq)[0] == g.args(pk)[0]
    if same_q:
        parts = _merge(g, [pq, pk, pv], attn, "QKV merge")
    else:
        parts = _merge(g, [pk, pv], attn, "KV merge")
    if parts is None:
        return Reject(f"attention at {where(attn)}: k and v read different inputs")
    if isinstance(parts, Reject):
        return parts
    if same_q:
        new_q, new_k, new_v = (_rewire(g, rq, parts[0]), _rewire(g, rk, parts[1]), parts[2])
    else:
        new_q, new_k, new_v = q, _rewire(g, rk, parts[0]), parts[1]
    return emit(g, "attention", [new_q, new_k, new_v] + rest, attn.attrs, scope=attn.scope,
                span=attn.span, name=attn.id + "_")


def _rope_inside(g: Graph, m) -> str | Reject | None:
    attn, rq, rk = g.node(m["attn"]), g.node(m["rq"]), g.node(m["rk"])
    for r in (rq, rk):
        if g.n_uses(r.id) != 1:
            return Reject(f"RoPE at {where(r)} has a second consumer")
    if any(rq.attrs.get(a) != rk.attrs.get(a) for a in ROPE_ATTRS):
        return Reject(f"attention at {where(attn)}: q and k use different RoPE settings")
    if g.args(rq.id)[1:] != g.args(rk.id)[1:]:
        return Reject(f"attention at {where(attn)}: q and k are rotated with different "
                      "positions")
    q, k, v, *rest = g.args(attn.id)
    n_mask_bias = len(rest)
    # attention's optional args are mask then bias; a bias alone cannot be told apart from
    # a mask by position, so look at the dtype: masks are bool/int, biases float
    has_mask = n_mask_bias >= 1 and g.node(rest[0]).dtype in ("bool", "int64")
    has_bias = n_mask_bias == 2 or (n_mask_bias == 1 and not has_mask)
    pos = g.args(rq.id)[1:]
    attrs = {**attn.attrs, **{a: rq.attrs.get(a) for a in ROPE_ATTRS if a in rq.attrs},
             "has_mask": has_mask, "has_bias": has_bias, "has_positions": bool(pos)}
    args = [g.args(rq.id)[0], g.args(rk.id)[0], v] + rest + pos
    return emit(g, "rope_attention", args, attrs, scope=attn.scope, span=attn.span)


# ---- the scaled dot-product written out -> attention ------------------------------------

def _layer_index(scope: str) -> int | None:
    """The repeat index of a scope (`layers.3.attn` -> 3), as the Attention layer sets it."""
    nums = [p for p in scope.split(".") if p.isdigit()]
    return int(nums[-1]) if nums else None


def _other_user(g: Graph, nid: str, than: str) -> str:
    for u, _ in g.users(nid):
        if u != than:
            return where(g.node(u))
    return "a graph output"


def _score_terms(g: Graph, nid: str):
    """Split softmax's input into (q k^T product, scale node or None, addends, sums), or
    None when no matmul product is found under adds and one mul/div."""
    node = g.node(nid)
    if node.op == "add":
        a, b = g.args(nid)
        for x, y in ((a, b), (b, a)):
            found = _score_terms(g, x)
            if found is not None:
                prod, scale, addends, sums = found
                return prod, scale, addends + [y], sums + [nid]
        return None
    if node.op in ("mul", "div"):
        a, b = g.args(nid)
        pairs = ((a, b), (b, a)) if node.op == "mul" else ((a, b),)
        for x, _ in pairs:
            if g.node(x).op == "matmul":
                return x, nid, [], []
        return None
    if node.op == "matmul":
        return nid, None, [], []
    return None


def _scale_value(g: Graph, scale: str, prod: str, what: str) -> float | Reject:
    node = g.node(scale)
    c = g.node(next(a for a in g.args(scale) if a != prod))
    value = np.asarray(c.attrs.get("value")) if c.op == "const" else None
    if value is None or value.size != 1 or not np.isfinite(value).all() or \
            (node.op == "div" and float(value.reshape(())) == 0.0):
        return Reject(f"{what}: scale is not a constant scalar ({c.op} {c.type_str} at "
                      f"{where(c)})")
    v = float(value.reshape(()))
    return 1.0 / v if node.op == "div" else v


def _kv_heads(k: Heads, H: int) -> int | None:
    """K/V heads behind an operand with H query heads; None when they cannot pair up."""
    if k.heads == H:
        return H // k.groups
    return 1 if k.heads == 1 else None    # one K/V head broadcast over every query head


def _recompose(g: Graph, m) -> str | Reject | None:
    pv, sm = g.node(m["pv"]), g.node(m["softmax"])
    rank = len(sm.shape)
    if pv.attrs.get("transpose_b") or sm.attrs.get("axis", -1) % rank != rank - 1:
        return None
    what = f"attention at {where(sm)}"
    if g.n_uses(sm.id) != 1:
        return Reject(f"softmax at {where(sm)} has a second consumer "
                      f"{_other_user(g, sm.id, pv.id)}")
    found = _score_terms(g, m["scores"])
    if found is None:
        return Reject(f"{what}: the softmax input is not a q k^T product plus terms")
    prod, scale, addends, sums = found
    for nid in [prod] + ([scale] if scale else []) + sums:
        n = g.node(nid)
        if g.n_uses(nid) != 1:
            return Reject(f"{n.op} at {where(n)} has a second consumer "
                          f"{_other_user(g, nid, sm.id)}")
        if (n.shape, n.dtype) != (g.node(prod).shape, g.node(prod).dtype):
            return Reject(f"{what}: {n.op} at {where(n)} broadcasts the scores "
                          f"{g.node(prod).type_str} to {n.type_str}")
    qh, kt = g.args(prod)
    parts = {"q": operand_heads(g, qh),
             "k": operand_heads(g, kt, keys=True,
                                transpose_b=bool(g.node(prod).attrs.get("transpose_b"))),
             "v": operand_heads(g, m["v"])}
    for name, h in parts.items():
        if isinstance(h, str):
            return Reject(f"{what}: {name} {h}")
    q, k, v = parts["q"], parts["k"], parts["v"]
    if len({q.split, k.split, v.split}) != 1 or q.groups != 1:
        return Reject(f"{what}: q, k and v are not split into heads the same way")
    H = q.heads
    Hkv = _kv_heads(k, H)
    if Hkv is None or Hkv != _kv_heads(v, H):
        return Reject(f"{what}: k and v heads ({k.heads}, {v.heads}) do not pair with "
                      f"{H} query heads")

    # the output: merged back from heads, (*L, H, T, D) -> (*L, T, H*D)
    root = pv.id
    if q.split:
        n = rank - 3
        users = g.users(pv.id)
        t = g.node(users[0][0]) if len(users) == 1 and g.n_uses(pv.id) == 1 else None
        r = g.node(g.users(t.id)[0][0]) if t is not None and t.op == "transpose" and \
            g.n_uses(t.id) == 1 and g.users(t.id) else None
        want = tuple(g.node(q.src).shape[:-1]) + (g.node(q.src).shape[-1],)
        if r is None or perm_of(t, rank) != [*range(n), n + 1, n, n + 2] or \
                r.op != "reshape" or tuple(r.shape) != want:
            return Reject(f"{what}: the output is not merged back from heads "
                          "(transpose + reshape to the width of q)")
        root = r.id

    mask = bias = None
    causal, window = False, None
    seen_mask = False
    for a in addends:
        an = g.node(a)
        if an.op == "attention_mask":
            if seen_mask:
                return Reject(f"{what}: two attention_mask terms")
            seen_mask = True
            causal, window = bool(an.attrs.get("causal")), an.attrs.get("window")
        elif an.op == "padding_mask":
            if mask is not None:
                return Reject(f"{what}: two padding_mask terms")
            mask = g.args(a)[0]
        elif bias is not None:
            return Reject(f"{what}: more than one score bias ({where(g.node(bias))}, "
                          f"{where(an)})")
        else:
            bias = a
    if bias is not None and mask is None:
        return Reject(f"{what}: a score bias without a padding mask has no attention-op form "
                      "(the op's bias follows its mask)")

    D = g.node(qh).shape[-1]
    s = 1.0
    if scale is not None:
        s = _scale_value(g, scale, prod, what)
        if isinstance(s, Reject):
            return s
    default = isinstance(D, int) and math.isclose(s, 1.0 / math.sqrt(D), rel_tol=1e-6)
    decl = g.meta.get(META_KEY, {}).get(root, {"cache": True, "layer": _layer_index(sm.scope)})
    attrs = {"heads": H, "kv_heads": Hkv, "causal": causal, "window": window,
             "scale": None if default else s, "cache": decl["cache"], "layer": decl["layer"]}
    args = [q.src, k.src, v.src] + [x for x in (mask, bias) if x is not None]
    try:
        fused = emit(g, "attention", args, attrs, scope=sm.scope, span=sm.span)
    except ShapeError as e:
        return Reject(f"{what}: {e.message}")
    fn, rn = g.node(fused), g.node(root)
    if (fn.shape, fn.dtype) != (rn.shape, rn.dtype):
        g.remove(fused)
        return Reject(f"{what}: the fused op would give {fn.type_str}, not {rn.type_str}")
    if root != pv.id:
        g.replace_uses(root, fused)   # the per-head transpose and reshape die with pv
    return fused


SDPA = [
    # matmul(softmax(q k^T * scale + masks), v) over heads -> attention(q, k, v, ...)
    Rule("sdpa", Pat("matmul", Pat("softmax", any_("scores"), name="softmax"), any_("v"),
                     name="pv"), _recompose),
]
MERGE = [
    # attention(linear(x, Wq), linear(x, Wk), linear(x, Wv)) -> one linear + split
    Rule("qkv", Pat("attention", name="attn", any_args=True), _merge_projections),
]
ROPE = [
    # attention(rope(q), rope(k), v, ...) -> rope_attention(q, k, v, ...)
    Rule("rope", Pat("attention", Pat("rope", name="rq", any_args=True),
                     Pat("rope", name="rk", any_args=True), Pat(None, any_args=True),
                     name="attn", rest=True), _rope_inside),
]


def fuse_attention(g: Graph) -> PassResult:
    out = g.copy()
    log = RewriteLog()
    whole = sum(1 for n in out.nodes() if n.op == "attention")
    rewrite(out, SDPA, log)
    attn = sum(1 for n in out.nodes() if n.op == "attention")
    rewrite(out, MERGE, log, max_rounds=1)
    rewrite(out, ROPE, log)
    written_out = log.fired["sdpa"] + sum(1 for rule, _ in log.rejected if rule == "sdpa")
    cov = {}
    if whole + written_out:
        cov["attention"] = (whole + log.fired["sdpa"], whole + written_out)
    if attn:
        cov["QKV projections"] = (log.fired["qkv"], attn)
    return PassResult(out, bool(sum(log.fired.values())), log.fired, explain(log), cov)
