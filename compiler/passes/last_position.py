"""last_position: compute one output for the last position only.

A generation's prompt pass needs the logits of the prompt's last token, but a model
computes them for every position; GPT-2 small's LM head alone is a quarter of a 128-token
pass. The ops between the last attention and the logits act on each position by itself
(norms, matrix products with weights, activations, residual adds), so they can run on
the last position's row alone:

    before                                   after
    h = add_layernorm(x, f, w, b)[1]         x1 = slice(x, axis=1, start=-1)
    logits = matmul(h, wte^T)                f1 = slice(f, axis=1, start=-1)
      (B, T, vocab)                          h = add_layernorm(x1, f1, w, b)[1]
                                             logits = matmul(h, wte^T)   (B, 1, vocab)

The tail grows backwards from the output through position-wise ops whose every consumer
is in the tail; each value entering it from outside (a dynamic value with the positions
at `axis`) is read through a slice of its last position. Weights and constants enter as
they are, unless they would broadcast along the positions (a learned position table added
to the residual stream stops the tail there). Values other outputs or the rest of the
model read (K/V for the cache, the residual stream an earlier layer still uses) keep
every position.

Not in the default pipeline: it changes what the output means. runtime/generate.py asks
for it (Executor.last_position) for prompt passes and for decoding without a cache.

Ensures: `output` is (..., 1, ...) along `axis` and equal to the original's last position;
every other output unchanged; weights and parameter-derived nodes untouched (an executor
can share its folded values with the new graph); `stats["sliced"]` = slices inserted,
`stats["tail"]` = nodes that now see one position.
"""
from __future__ import annotations

from collections import Counter

from ...dsl.graph import Graph
from ...dsl.ops import OPS, TT, infer
from ..ir import PassResult, emit, param_derived, ttype

# Which ops act position by position, and which arguments carry the positions, is each
# op's `per_position` trait (dsl/ops): argument positions (the others must be weights or
# constants), or "dynamic" (binary arithmetic: every argument that is not a weight).


def last_position(g: Graph, output: str | None = None, axis: int = 1) -> PassResult:
    """`output` (the only output if None) for the last position along `axis` only."""
    out = g.copy()
    if output is None:
        if len(out.outputs) != 1:
            raise ValueError("last_position: name the output (the model has several)")
        output = next(iter(out.outputs))
    target = out.outputs[output]
    node = out.node(target)
    if node.shape is None or len(node.shape) <= axis:
        return PassResult(out, False, notes=[f"{output} has no position axis {axis}"])
    positions = node.shape[axis]
    if isinstance(positions, int):
        # a concrete size there is not a sequence length (BERT's pooled (B, 768))
        return PassResult(out, False, notes=[f"{output}'s axis {axis} is not a length"])
    derived = param_derived(out)
    tail = _tail(out, target, axis, positions, derived)
    if not tail:
        return PassResult(out, False, notes=[f"{output} is not computed position by position"])
    stats: Counter = Counter(tail=len(tail))
    order = out.topo()
    sliced: dict[str, str] = {}
    for nid in (n for n in order if n in tail):
        args = out.args(nid)
        new = []
        for a in args:
            if a in tail or a in derived:
                new.append(a)
                continue
            if a not in sliced:
                src = out.node(a)
                sliced[a] = emit(out, "slice", [a], {"axis": axis, "start": -1},
                                 scope=src.scope, span=src.span, name=f"{a}.last")
                stats["sliced"] += 1
            new.append(sliced[a])
        if new != args:
            out.set_args(nid, new)
    for nid in (n for n in order if n in tail):
        _retype(out, nid)
    return PassResult(out, True, stats)


def _tail(g: Graph, target: str, axis: int, positions, derived: set[str]) -> set[str]:
    """The nodes that may run on the last position alone, `target` last."""
    others = set(g.outputs.values()) - {target}
    tail: set[str] = set()
    for nid in reversed(g.topo()):
        if nid in derived or nid in others:
            continue
        users = g.users(nid)
        if nid != target and (not users or any(u not in tail for u, _ in users)):
            continue
        if _position_wise(g, nid, axis, positions, derived):
            tail.add(nid)
    # a getitem stays out when its tuple does (a tuple can't be sliced; its part is)
    for nid in [n for n in tail if g.node(n).op == "getitem"]:
        if g.args(nid)[0] not in tail:
            tail.discard(nid)
    return tail


def _has_positions(t: TT, axis: int, lead: tuple) -> bool:
    # the same leading sizes as the node's output, positions included: (B, T)
    return t.shape is not None and len(t.shape) > axis and tuple(t.shape[:axis + 1]) == lead


def _position_wise(g: Graph, nid: str, axis: int, positions, derived: set[str]) -> bool:
    node = g.node(nid)
    args = g.args(nid)
    if node.op == "getitem":
        return True                     # decided with its tuple (see _tail)
    shapes = [s for s, _ in node.parts] if node.dtype == "tuple" else [node.shape]
    if not shapes or any(s is None or len(s) <= axis or s[axis] != positions for s in shapes):
        return False
    lead = tuple(shapes[0][:axis + 1])
    spec = OPS.get(node.op)
    per_position = spec.traits.get("per_position") if spec is not None else None
    dynamic = per_position == "dynamic"
    if dynamic:
        rows = [i for i, a in enumerate(args) if a not in derived]
    elif per_position:
        rows = [i for i in per_position if i < len(args)]
    else:
        return False
    if node.op == "softmax" and node.attrs.get("axis", -1) not in (-1, len(node.shape) - 1):
        return False
    rank = len(shapes[0])
    for i, a in enumerate(args):
        t = ttype(g, a)
        if i in rows:
            if a in derived or not _has_positions(t, axis, lead):
                return False
        elif a not in derived:
            return False                # a dynamic non-row input (e.g. a runtime weight)
        elif dynamic and t.shape is not None and len(t.shape) > rank - axis - 1:
            return False                # a weight that broadcasts along the positions
    if node.op == "matmul" and (len(args) < 2 or len(ttype(g, args[1]).shape or ()) != 2):
        return False
    return bool(rows)


def _retype(g: Graph, nid: str) -> None:
    node = g.node(nid)
    if node.op == "getitem":
        shape, dtype = g.node(g.args(nid)[0]).parts[node.attrs.get("index", 0)]
        g.set_node(node.with_(shape=shape, dtype=dtype))
        return
    t = infer(node.op, [ttype(g, a) for a in g.args(nid)], node.attrs)
    if isinstance(t, TT):
        g.set_node(node.with_(shape=t.shape, dtype=t.dtype))
    else:
        g.set_node(node.with_(parts=tuple((p.shape, p.dtype) for p in t)))
