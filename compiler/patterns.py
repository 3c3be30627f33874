"""Pattern matching for rewrites: small rule tables rooted at one node, tinygrad style.

A pattern is a tree of `Pat(op, *args, name=...)`; a rule is (name, pattern, fn). The
rewriter tries each rule at each node in topological order; `fn(g, m)` gets the captures
`m` (name -> node id) and returns the id of the replacement node, `Reject("why")` when
the candidate must not fuse (shown by `--explain`), or None when the rule simply does not
apply. A name captured twice must bind the same node, which is how "gate and up read the
same x" is written. `add` and `mul` also match with their operands swapped.

    RULES = [
        # relu(linear(x, w, b)) -> linear_act(x, w, b, act=relu)
        Rule("linear+act", Pat(Trait("activation"), Pat("linear", name="lin"), name="act"), fuse_linear_act),
    ]
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..dsl.graph import Graph
from ..dsl.ops import OPS, trait
from .ir import dce



@dataclass(frozen=True)
class Reject:
    reason: str


@dataclass(frozen=True)
class Trait:
    """Matches every op that has this trait (dsl/ops), including ops declared later."""
    name: str


class Pat:
    """Match a node by op (a name, a set of names, a `Trait`, or None for any) and its
    arguments. `args=None` ignores the arguments; `rest=True` allows trailing ones beyond
    the patterns (an optional bias)."""

    def __init__(self, op: str | Iterable[str] | Trait | None = None, *args: "Pat",
                 name: str | None = None, rest: bool = False, any_args: bool = False):
        self.trait = op.name if isinstance(op, Trait) else None
        self.ops = None if op is None or self.trait else \
            ({op} if isinstance(op, str) else set(op))
        self.args = None if any_args else args
        self.name = name
        self.rest = rest

    def match(self, g: Graph, nid: str, caps: dict[str, str]) -> dict[str, str] | None:
        node = g.node(nid)
        if self.ops is not None and node.op not in self.ops:
            return None
        if self.trait is not None and not (node.op in OPS and OPS[node.op].has(self.trait)):
            return None
        if self.name is not None:
            if self.name in caps and caps[self.name] != nid:
                return None
            caps = {**caps, self.name: nid}
        if self.args is None:
            return caps
        args = g.args(nid)
        if len(args) < len(self.args) or (len(args) > len(self.args) and not self.rest):
            return None
        orders = [list(range(len(self.args)))]
        if trait(node.op, "commutative") and len(self.args) == 2:
            orders.append([1, 0])
        for order in orders:
            got: dict[str, str] | None = caps
            for pat, k in zip(self.args, order):
                got = pat.match(g, args[k], got)
                if got is None:
                    break
            if got is not None:
                return got
        return None


ANY = Pat()


def any_(name: str) -> Pat:
    """Capture any node under `name`."""
    return Pat(None, name=name, any_args=True)


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: Pat
    fn: Callable[[Graph, dict[str, str]], "str | Reject | None"]


@dataclass
class RewriteLog:
    fired: Counter = field(default_factory=Counter)
    rejected: dict[tuple[str, str], str] = field(default_factory=dict)   # (rule, root) -> why
    fired_at: set[tuple[str, str]] = field(default_factory=set)


def rewrite(g: Graph, rules: list[Rule], log: RewriteLog | None = None,
            max_rounds: int = 20) -> RewriteLog:
    """Apply the rules to `g` (in place) until none fires; then drop dead nodes."""
    log = log or RewriteLog()
    for _ in range(max_rounds):
        changed = False
        for nid in g.topo():
            if nid not in g or g.n_uses(nid) == 0:
                continue   # removed, or dead after an earlier rewrite this round
            for rule in rules:
                m = rule.pattern.match(g, nid, {})
                if m is None:
                    continue
                out = rule.fn(g, m)
                if isinstance(out, Reject):
                    log.rejected[(rule.name, nid)] = out.reason
                    continue
                if out is None or out == nid:
                    continue
                g.replace_uses(nid, out)
                log.fired[rule.name] += 1
                log.fired_at.add((rule.name, nid))
                log.rejected.pop((rule.name, nid), None)
                changed = True
                break
        if not changed:
            break
        dce(g)
    dce(g)
    return log


def explain(log: RewriteLog) -> list[str]:
    return [f"{rule}: {why}" for (rule, _), why in log.rejected.items()]
