"""The verifier: checks a graph is well formed, between passes when asked (`--verify`,
always in tests).

Checks: every argument exists and argument positions are 0..n-1 without gaps; every op is
registered and has a reference kernel (`ref_<op>` in runtime/kernels/) or a decomposition
in the lower_layers pass; re-inferring each node's type from its arguments gives the type
recorded on it; getitem indexes a real part; outputs and inputs exist.

A failure is a bug in a pass, not in the user's model, so it raises `VerifyError` (an
internal error) naming the pass, the passes before it, the node and its source span.

Kernel names are read from the kernel files' source with Python's `ast` module rather than
by importing them, so `archc dump --verify` never imports Numba.
"""
from __future__ import annotations

import ast as pyast
from functools import lru_cache
from pathlib import Path

from ..dsl.graph import Graph
from ..dsl.ops import OPS, ShapeError, TT, infer

KERNEL_DIR = Path(__file__).resolve().parent.parent / "runtime" / "kernels"
SPECIAL = {"input", "param", "const", "getitem"}


class VerifyError(RuntimeError):
    """The graph a pass produced is malformed: a compiler bug."""


@lru_cache(maxsize=1)
def kernel_ops() -> frozenset[str]:
    """Op names with a `ref_<op>` function in runtime/kernels/*.py (read, not imported)."""
    names = set()
    for path in sorted(KERNEL_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = pyast.parse(path.read_text(encoding="utf-8"), str(path))
        for item in tree.body:
            if isinstance(item, pyast.FunctionDef) and item.name.startswith("ref_"):
                names.add(item.name[4:])
    return frozenset(names)


def problems(g: Graph, lowerable: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(node id, what is wrong) for each problem found; empty when the graph is sound."""
    out: list[tuple[str, str]] = []
    kernels = kernel_ops()
    for nid in g.inputs:
        if nid not in g or g.node(nid).op != "input":
            out.append((nid, "listed as an input but is not an input node"))
    for name, nid in g.outputs.items():
        if nid not in g:
            out.append((nid, f"output `{name}` names a node that does not exist"))
    for nid in g.topo():
        node = g.node(nid)
        positions = sorted(p for _, _, p in g.nx.in_edges(nid, data="pos"))
        if positions != list(range(len(positions))):
            out.append((nid, f"argument positions {positions} are not 0..{len(positions) - 1}"))
            continue
        args = g.args(nid)
        if node.op in ("input", "param", "const"):
            if args:
                out.append((nid, f"{node.op} node has arguments"))
            continue
        if node.op not in OPS:
            out.append((nid, f"unknown op {node.op!r}"))
            continue
        if node.op not in kernels and node.op not in lowerable:
            out.append((nid, f"op {node.op!r} has no reference kernel and no decomposition"))
        if node.op == "getitem":
            src = g.node(args[0]) if len(args) == 1 else None
            i = node.attrs.get("index", 0)
            if src is None or src.dtype != "tuple" or not 0 <= i < len(src.parts):
                out.append((nid, "getitem does not index a part of a multi-output node"))
            elif (tuple(node.shape), node.dtype) != (tuple(src.parts[i][0]), src.parts[i][1]):
                out.append((nid, f"getitem type {node.type_str} differs from part {i} of "
                                 f"{src.id}"))
            continue
        types = []
        for a in args:
            an = g.node(a)
            if an.dtype == "tuple":
                out.append((nid, f"argument {a} is a multi-output node; read it via getitem"))
                break
            types.append(TT(an.shape, an.dtype))
        else:
            try:
                want = infer(node.op, types, node.attrs)
            except ShapeError as e:
                out.append((nid, f"shape inference fails: {e.message}"))
                continue
            if isinstance(want, TT):
                if node.dtype == "tuple" or (tuple(want.shape), want.dtype) != \
                        (tuple(node.shape), node.dtype):
                    out.append((nid, f"recorded type {node.type_str} but its arguments give "
                                     f"{want}"))
            else:
                parts = tuple((tuple(t.shape), t.dtype) for t in want)
                if node.dtype != "tuple" or tuple((tuple(s), d) for s, d in node.parts) != parts:
                    out.append((nid, f"recorded type {node.type_str} but its arguments give "
                                     f"({', '.join(str(t) for t in want)})"))
    return out


def verify(g: Graph, after: str = "", before: list[str] | tuple[str, ...] = (),
           lowerable: frozenset[str] = frozenset()) -> None:
    """Raise `VerifyError` for the first few problems, naming the pass that made them."""
    found = problems(g, lowerable)
    if not found:
        return
    ran = ", ".join(before) if before else "none"
    lines = [f"graph is malformed after pass `{after or 'lowering'}` (passes before it: {ran})"]
    for nid, what in found[:5]:
        node = g.node(nid) if nid in g else None
        at = f"{node.span}: " if node is not None and node.span else ""
        scope = f" [{node.scope}]" if node is not None and node.scope else ""
        lines.append(f"  {at}{nid}{scope}: {what}")
    if len(found) > 5:
        lines.append(f"  ... and {len(found) - 5} more")
    raise VerifyError("\n".join(lines))
