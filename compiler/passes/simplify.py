"""simplify: canonicalise the graph so fusions see one spelling of each computation.

    before                                   after
    dropout(x, rate)                         x                       (inference)
    matmul(x, W)        W 2-D, from params   linear(x, W)      (W^T with transpose_b: the
                                                                   transpose runs once at load)
    matmul(a, transpose(b))  b computed      matmul(a, b, transpose_b=true)   (no transpose node)
    add(linear(x, W), b)  b (out,)           linear(x, W, b)
    transpose(transpose(x, p), q)            x  (or one transpose with the composed perm)
    add(x, 0) / mul(x, 1) / div(x, 1)        x  (when that does not change x's shape/type)
    op(const, const, ...)                    const                   (constant folding)
    two nodes with equal op, args, attrs     one node                (common subexpressions)
    nodes no output needs                    removed                 (dead code)

Requires: a verified graph. Ensures: the same outputs (bit for bit except constant folding,
which uses the same NumPy arithmetic as the reference kernels); every `matmul` by a 2-D
parameter-derived weight is a `linear`, with its bias when one is added right after.
Transposes of weights are left in place: they are parameter-derived, so the runtime
computes them once at load (see compiler/ir.py), which folds them out of the matmul.
"""
from __future__ import annotations

import numpy as np

from ...dsl.graph import Graph
from ...dsl.ops import OPS
from ..ir import PassResult, dce, emit, is_param_derived, where
from ..patterns import Pat, Reject, Rule, RewriteLog, any_, explain, rewrite

MAX_FOLD_ELEMENTS = 1 << 20


def _drop_dropout(g: Graph, m) -> str:
    return g.args(m["drop"])[0]


def _matmul_to_linear(g: Graph, m) -> str | None:
    mm = g.node(m["mm"])
    x, w = g.args(mm.id)
    wn, xn = g.node(w), g.node(x)
    if len(wn.shape) != 2 or not xn.shape or not is_param_derived(g, w):
        return None
    if len(xn.shape) == 1:
        return None   # a vector @ matrix keeps matmul's rank rules
    if mm.attrs.get("transpose_b"):
        # W^T is parameter-derived: arranged once when the weights load
        w = emit(g, "transpose", [w], scope=mm.scope, span=mm.span)
        wn = g.node(w)
    users = g.users(mm.id)
    if g.n_uses(mm.id) == 1 and users and g.node(users[0][0]).op == "add":
        # x @ W + b in one step, so the new node needs no second rewrite
        add = g.node(users[0][0])
        b = [a for a in g.args(add.id) if a != mm.id]
        if len(b) == 1 and tuple(g.node(b[0]).shape) == (wn.shape[1],) and \
                g.node(b[0]).dtype == mm.dtype == add.dtype:
            new = emit(g, "linear", [x, w, b[0]], scope=mm.scope, span=add.span)
            g.replace_uses(add.id, new)
            return new
    return emit(g, "linear", [x, w], scope=mm.scope, span=mm.span)


def _linear_bias(g: Graph, m) -> str | Reject | None:
    lin, b, add = g.node(m["lin"]), g.node(m["b"]), g.node(m["add"])
    if len(g.args(lin.id)) != 2:
        return None
    x, w = g.args(lin.id)
    if not is_param_derived(g, b.id):
        return None   # a residual add, not a bias
    out = g.node(w).shape[1]
    if tuple(b.shape) != (out,):
        if len(b.shape) != 1:
            return Reject(f"add at {where(add)}: bias {b.type_str} is not 1-D")
        return Reject(f"add at {where(add)}: bias {b.type_str} does not match {out} outputs")
    if g.n_uses(lin.id) != 1:
        return Reject(f"add at {where(add)}: the product before the bias has another "
                      f"consumer {g.users(lin.id)[0][0] if g.users(lin.id) else 'output'}")
    if b.dtype != lin.dtype or add.dtype != lin.dtype:
        return Reject(f"add at {where(add)}: bias type {b.type_str} differs from {lin.type_str}")
    return emit(g, "linear", [x, w, b.id], scope=lin.scope, span=add.span)


def _fold_transpose_b(g: Graph, m) -> str | None:
    mm, t = g.node(m["mm"]), g.node(m["t"])
    b = g.args(t.id)[0]
    rank = len(t.shape)
    perm = t.attrs.get("perm")
    swap = list(range(rank - 2)) + [rank - 1, rank - 2]
    if mm.attrs.get("transpose_b") or rank < 2 or \
            (perm is not None and [p % rank for p in perm] != swap):
        return None
    return emit(g, "matmul", [m["a"], b], {"transpose_b": True}, scope=mm.scope, span=mm.span)


def _compose_transpose(g: Graph, m) -> str | None:
    outer, inner = g.node(m["outer"]), g.node(m["inner"])
    x = g.args(inner.id)[0]
    rank = len(g.node(x).shape)

    def perm(n):
        p = n.attrs.get("perm")
        return [i % rank for i in p] if p is not None else \
            list(range(rank - 2)) + [rank - 1, rank - 2]
    p, q = perm(inner), perm(outer)
    total = [p[i] for i in q]
    if total == list(range(rank)):
        return x
    return emit(g, "transpose", [x], {"perm": total}, scope=outer.scope, span=outer.span)


def _identity(g: Graph, m) -> str | None:
    node, c = g.node(m["op"]), g.node(m["c"])
    x = m["x"]
    neutral = 0 if node.op == "add" else 1
    if node.op == "div" and g.args(node.id)[1] != c.id:
        return None
    xn = g.node(x)
    value = np.asarray(c.attrs["value"])
    if value.size and np.all(value == neutral) and (xn.shape, xn.dtype) == (node.shape, node.dtype):
        return x
    return None


def _fold(g: Graph, m) -> str | None:
    node = g.node(m["op"])
    args = [g.node(a) for a in g.args(node.id)]
    fold = OPS[node.op].fold if node.op in OPS else None      # declared with the op
    if fold is None or not args or any(a.op != "const" for a in args):
        return None
    if node.dtype == "tuple" or not all(isinstance(d, int) for d in node.shape):
        return None
    if int(np.prod(node.shape)) > MAX_FOLD_ELEMENTS:
        return None
    with np.errstate(all="ignore"):
        value = fold(*[a.attrs["value"] for a in args], **dict(node.attrs))
    value = np.asarray(value).astype(node.dtype)
    return g.add("const", [], shape=value.shape, dtype=node.dtype, attrs={"value": value},
                 span=node.span, scope=node.scope, name=node.id + ".folded")


RULES = [
    # dropout is the identity at inference
    Rule("dropout", Pat("dropout", any_("x"), name="drop"), _drop_dropout),
    # x @ W with W a 2-D weight -> linear(x, W)
    Rule("matmul->linear", Pat("matmul", any_("x"), any_("w"), name="mm"), _matmul_to_linear),
    # matmul(a, transpose(b)) -> matmul(a, b, transpose_b=true)   (after matmul->linear)
    Rule("transpose->matmul", Pat("matmul", any_("a"), Pat("transpose", name="t", any_args=True),
                                  name="mm"), _fold_transpose_b),
    # linear(x, W) + b -> linear(x, W, b)
    Rule("linear+bias", Pat("add", Pat("linear", name="lin", any_args=True), any_("b"),
                            name="add"), _linear_bias),
    # transpose(transpose(x)) -> x, or one transpose
    Rule("transpose∘transpose", Pat("transpose", Pat("transpose", name="inner", any_args=True),
                                    name="outer"), _compose_transpose),
    # x + 0, x * 1, x / 1 -> x
    Rule("identity", Pat(("add", "mul", "div"), any_("x"), Pat("const", name="c"), name="op"),
         _identity),
    # an op of constants -> a constant
    Rule("fold", Pat(None, name="op", any_args=True), _fold),
]


def _attr_key(v):
    if isinstance(v, np.ndarray):
        return ("ndarray", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, (list, tuple)):
        return tuple(_attr_key(x) for x in v)
    return (type(v).__name__, v) if not isinstance(v, dict) else tuple(sorted(v.items()))


def cse(g: Graph) -> int:
    """Merge nodes that compute the same thing from the same arguments."""
    seen: dict[tuple, str] = {}
    merged = 0
    for nid in g.topo():
        if nid not in g:
            continue
        node = g.node(nid)
        if node.op in ("input", "param", "dropout"):
            continue
        key = (node.op, tuple(g.args(nid)), node.dtype, node.shape,
               tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items())))
        first = seen.get(key)
        if first is None:
            seen[key] = nid
            continue
        g.replace_uses(nid, first)
        merged += 1
    return merged


def simplify(g: Graph) -> PassResult:
    out = g.copy()
    before = len(out)
    log = RewriteLog()
    rewrite(out, RULES, log)
    merged = cse(out)
    if merged:
        log.fired["cse"] += merged
        rewrite(out, RULES, log)   # merging can expose new matches (x - x is left alone)
    dead = dce(out)
    if dead:
        log.fired["dce"] += dead
    changed = bool(sum(log.fired.values())) or len(out) != before
    return PassResult(out, changed, log.fired, explain(log))
