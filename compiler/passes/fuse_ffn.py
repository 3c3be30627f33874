"""fuse_ffn: linear + activation, gated linear units, and whole feed-forward blocks.

    before                                       after
    act(linear(x, W, b))                         linear_act(x, W, b, act)
    mul(linear_act(x, Wg, bg, act),              linear_glu(x, concat(Wg, Wu), concat(bg, bu), act)
        linear(x, Wu, bu))
    linear(linear_act(x, W1, b1, act), W2, b2)   ffn(x, W1, W2, b1, b2, act, glu=false)
    linear(linear_glu(x, W1, b1, act), W2, b2)   ffn(x, W1, W2, b1, b2, act, glu=true)

The rules match primitive ops (after simplify turned `x @ W + b` into `linear`), so the
hand-written `relu(x @ W1 + b1) @ W2 + b2` of examples/ffn.arch fuses exactly like a
library FFN. Merged GLU weights are `concat` nodes of parameters: parameter-derived, so
the runtime concatenates them once at load (compiler/ir.py).

Rejected (listed by `--explain`): a product or hidden activation read by another op
(fusing would compute it twice); gate and up reading different inputs, having different
shapes, or only one of them a bias.

Requires: simplify ran. Ensures: the same outputs; coverage "FFN" = (whole FFNs fused,
FFN candidates seen).
"""
from __future__ import annotations

from ...dsl.graph import Graph
from ..ir import PassResult, common_scope, emit, where
from ..patterns import Pat, Reject, Rule, RewriteLog, Trait, any_, explain, rewrite


def _other_user(g: Graph, nid: str, than: str) -> str:
    for u, _ in g.users(nid):
        if u != than:
            return where(g.node(u))
    return "a graph output"


def _linear_act(g: Graph, m) -> str | Reject:
    act, lin = g.node(m["act"]), g.node(m["lin"])
    if g.n_uses(lin.id) != 1:
        return Reject(f"{lin.op} at {where(lin)} has a second consumer "
                      f"{_other_user(g, lin.id, act.id)}")
    return emit(g, "linear_act", g.args(lin.id), {"act": act.op}, scope=lin.scope,
                span=lin.span)


def _glu(g: Graph, m) -> str | Reject:
    mul, gate, up = g.node(m["mul"]), g.node(m["gate"]), g.node(m["up"])
    if g.args(gate.id)[0] != g.args(up.id)[0]:
        return None   # not a GLU: the two products read different inputs
    for n in (gate, up):
        if g.n_uses(n.id) != 1:
            return Reject(f"GLU at {where(mul)}: {n.op} at {where(n)} has a second consumer "
                          f"{_other_user(g, n.id, mul.id)}")
    x, wg, *bg = g.args(gate.id)
    _, wu, *bu = g.args(up.id)
    if g.node(wg).shape != g.node(wu).shape or g.node(wg).dtype != g.node(wu).dtype:
        return Reject(f"GLU at {where(mul)}: gate weight {g.node(wg).type_str} and up weight "
                      f"{g.node(wu).type_str} differ")
    if len(bg) != len(bu):
        return Reject(f"GLU at {where(mul)}: only one of gate and up has a bias")
    scope = common_scope([gate.scope, up.scope]) or mul.scope
    w = emit(g, "concat", [wg, wu], {"axis": -1}, scope=scope, span=mul.span,
             name=f"{scope}.gate_up_weight" if scope else "gate_up_weight")
    args = [x, w]
    if bg:
        args.append(emit(g, "concat", [bg[0], bu[0]], {"axis": -1}, scope=scope, span=mul.span,
                         name=f"{scope}.gate_up_bias" if scope else "gate_up_bias"))
    return emit(g, "linear_glu", args, {"act": gate.attrs["act"]}, scope=scope, span=mul.span)


def _ffn(g: Graph, m) -> str | Reject:
    out, hidden = g.node(m["out"]), g.node(m["hidden"])
    if g.n_uses(hidden.id) != 1:
        return Reject(f"FFN at {where(out)}: the hidden activation {where(hidden)} has a "
                      f"second consumer {_other_user(g, hidden.id, out.id)}")
    x, w1, *b1 = g.args(hidden.id)
    _, w2, *b2 = g.args(out.id)
    scope = common_scope([hidden.scope, out.scope]) or out.scope
    attrs = {"act": hidden.attrs["act"], "glu": hidden.op == "linear_glu",
             "bias1": bool(b1), "bias2": bool(b2)}
    return emit(g, "ffn", [x, w1, w2] + b1 + b2, attrs, scope=scope, span=hidden.span)


LINEAR_ACT = [
    # act(linear(x, W, b?)) -> linear_act(x, W, b?, act)
    Rule("linear+act", Pat(Trait("activation"), Pat("linear", name="lin", any_args=True), name="act"),
         _linear_act),
]
GLU = [
    # linear_act(x, Wg, act) * linear(x, Wu) -> linear_glu(x, [Wg | Wu], act)
    Rule("glu", Pat("mul", Pat("linear_act", name="gate", any_args=True),
                    Pat("linear", name="up", any_args=True), name="mul"), _glu),
]
WHOLE = [
    # linear(linear_act|linear_glu(x, W1, b1?), W2, b2?) -> ffn(...)
    Rule("ffn", Pat("linear", Pat(("linear_act", "linear_glu"), name="hidden", any_args=True),
                    any_("w2"), name="out", rest=True), _ffn),
]


def fuse_ffn(g: Graph) -> PassResult:
    out = g.copy()
    log = RewriteLog()
    for table in (LINEAR_ACT, GLU, WHOLE):
        rewrite(out, table, log)
    fired = log.fired["ffn"]
    seen = fired + sum(1 for (rule, _) in log.rejected if rule == "ffn")
    cov = {"FFN": (fired, seen)}
    if log.fired["glu"] or any(rule == "glu" for rule, _ in log.rejected):
        cov["GLU"] = (log.fired["glu"], log.fired["glu"] +
                      sum(1 for (rule, _) in log.rejected if rule == "glu"))
    return PassResult(out, bool(sum(log.fired.values())), log.fired, explain(log), cov)
