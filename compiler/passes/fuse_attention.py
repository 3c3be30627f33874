"""fuse_attention: one projection matmul for Q, K and V, and RoPE inside the attention op.

    before                                    after
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

Rejected (listed by `--explain`): a projection also read elsewhere; projections of
different dtypes; biases on some projections only; RoPE on q and k with different
settings or positions.

Not done: a hand-written scaled dot-product (softmax(q @ k^T * scale + mask) @ v over
reshaped heads) is not yet recognised as one `attention` op; it runs as primitives.

Requires: simplify ran (projections are `linear`). Ensures: the same outputs;
coverage "attention" = (attention ops whose projections merged, attention ops seen).
"""
from __future__ import annotations

from ...dsl.graph import Graph
from ...dsl.ops.fused import ROPE_ATTRS
from ..ir import PassResult, common_scope, emit, where
from ..patterns import Pat, Reject, Rule, RewriteLog, explain, rewrite


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
    seen = sum(1 for n in out.nodes() if n.op == "attention")
    rewrite(out, MERGE, log, max_rounds=1)
    rewrite(out, ROPE, log)
    cov = {"attention": (log.fired["qkv"], seen)} if seen else {}
    return PassResult(out, bool(sum(log.fired.values())), log.fired, explain(log), cov)
