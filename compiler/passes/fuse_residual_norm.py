"""fuse_residual_norm: a norm of a residual sum becomes one op writing both results.

    before                                   after
    s = add(x, r)                            t = add_layernorm(x, r, w, b)   (or add_rmsnorm)
    y = layernorm(s, w, b)                   s = t[0]      # the new residual stream
    ... uses of s, uses of y                 y = t[1]

Pre-norm stacks (`h = x + attn(ln_1(x)); ln_2(h)`) and post-norm stacks
(`x = ln(x + attn(x))`) both have this shape. The other consumers of `s` read `t[0]`, so
a norm whose input is also needed unnormalised still fuses.

Rejected (and listed by `--explain`):
  - the add broadcasts (x and r differ in shape or dtype): the kernel adds row by row;
  - both operands are used again after the add: the fused kernel may write the sum over
    `x` (see dsl/ops/fused.py), so one operand must die at the add.

Requires: simplify ran (so there is no dropout between the add and the norm).
Ensures: the same outputs; `coverage["residual+norm"]` = (fused, norms of an add seen).
"""
from __future__ import annotations

from ...dsl.graph import Graph
from ...dsl.ops import OPS
from ..ir import PassResult, emit, later_users, topo_index, where
from ..patterns import Pat, Reject, Rule, RewriteLog, any_, explain, rewrite


def _fuse(g: Graph, m) -> str | Reject:
    norm, add = g.node(m["norm"]), g.node(m["add"])
    x, r = g.args(add.id)
    xn, rn = g.node(x), g.node(r)
    if (xn.shape, xn.dtype) != (rn.shape, rn.dtype) or xn.shape != add.shape:
        return Reject(f"add at {where(add)}: shapes don't match ({xn.type_str} + "
                      f"{rn.type_str} broadcasts)")
    order = topo_index(g)
    x_later, r_later = later_users(g, x, add.id, order), later_users(g, r, add.id, order)
    if x_later and r_later:
        return Reject(f"add at {where(add)}: both operands are used again after it "
                      f"(by {where(g.node(x_later[0]))} and {where(g.node(r_later[0]))})")
    if x_later or x in g.outputs.values():
        x, r = r, x   # the operand that dies here goes first: its buffer may take the sum
    fused_op = "add_layernorm" if norm.op == "layernorm" else "add_rmsnorm"
    args = [x, r] + g.args(norm.id)[1:]
    total, normed = emit(g, fused_op, args, {"eps": norm.attrs.get("eps", OPS[norm.op].attrs["eps"])}, scope=norm.scope,
                         span=norm.span)
    g.replace_uses(add.id, total)
    return normed


RULES = [
    # layernorm(x + r, w, b?) -> add_layernorm(x, r, w, b?)[1], the sum at [0]
    Rule("residual+layernorm", Pat("layernorm", Pat("add", any_("x"), any_("r"), name="add"),
                                   name="norm", rest=True), _fuse),
    # rmsnorm(x + r, w) -> add_rmsnorm(x, r, w)[1]
    Rule("residual+rmsnorm", Pat("rmsnorm", Pat("add", any_("x"), any_("r"), name="add"),
                                 name="norm", rest=True), _fuse),
]


def fuse_residual_norm(g: Graph) -> PassResult:
    out = g.copy()
    log = rewrite(out, RULES, RewriteLog())
    fused = sum(log.fired.values())
    seen = fused + len(log.rejected)
    return PassResult(out, fused > 0, log.fired, explain(log),
                      {"residual+norm": (fused, seen)})
