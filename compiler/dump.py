"""`archc dump`: the graph grouped by layer, as text (people), DOT (Graphviz) or JSON (tools).

A *layer* is a top-level scope: `hidden`, `wte`, `ln_f`, or one iteration of a `repeat`
stack (`layers.3`). Identical iterations of a stack are shown once with "× N" unless
`expand` is set, so a 48-layer dump stays readable.

JSON keys (format "archc.dump/1"; sizes are ints, symbolic sizes strings like "4*T"):
    model, source, format
    inputs / outputs: [{name, dtype, shape}]
    layers: [{name, repeat: {name, index, count} | null, params, flops,
              nodes: [{id, name, op, dtype, shape, args, attrs, params, flops, span}]}]
    totals: {layers, params, flops, bindings, flops_value}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..dsl.dims import Dim, DimLike, dim_add, evaluate, numel
from ..dsl.graph import Graph, Node
from ..dsl.ops import OPS, TT, count_flops

LEAF_OPS = ("input", "param", "const")


@dataclass
class Group:
    name: str                         # "hidden", "layers.3"
    repeat: tuple[str, int, int] | None = None   # (stack name, index, count)
    nodes: list[Node] = field(default_factory=list)
    params: int = 0
    flops: DimLike = 0


def node_flops(g: Graph, node: Node) -> DimLike:
    if node.op in LEAF_OPS or node.op not in OPS or node.op == "getitem":
        return 0
    types = [TT(g.node(a).shape, g.node(a).dtype) for a in g.args(node.id)]
    out = TT(node.shape, node.dtype) if node.dtype != "tuple" else \
        tuple(TT(s, d) for s, d in node.parts)
    return count_flops(node.op, out, types, node.attrs)


def node_params(node: Node) -> int:
    return int(numel(node.shape)) if node.op == "param" else 0


def group_key(g: Graph, scope: str) -> tuple[str, tuple[str, int, int] | None]:
    for rep in sorted(g.repeats, key=lambda r: -len(r.name)):
        prefix = rep.name + "."
        if scope.startswith(prefix):
            idx = scope[len(prefix):].split(".", 1)[0]
            if idx.isdigit():
                return f"{rep.name}.{idx}", (rep.name, int(idx), rep.count)
    return (scope.split(".", 1)[0] if scope else ""), None


def layer_groups(g: Graph) -> list[Group]:
    groups: dict[str, Group] = {}
    for node in g.nodes():
        if node.op == "input":
            continue
        key, rep = group_key(g, node.scope)
        grp = groups.setdefault(key, Group(key, rep))
        grp.nodes.append(node)
        grp.params += node_params(node)
        grp.flops = dim_add(grp.flops, node_flops(g, node))
    return list(groups.values())


def totals(g: Graph, groups: list[Group]) -> dict[str, Any]:
    flops: DimLike = 0
    for grp in groups:
        flops = dim_add(flops, grp.flops)
    return {"layers": sum(1 for grp in groups if grp.name), "params": g.param_count(),
            "flops": flops}


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_flops(f: DimLike, bindings: Mapping[str, int]) -> str:
    if isinstance(f, int):
        return _fmt_int(f)
    try:
        return f"{f} = {_fmt_int(evaluate(f, bindings))}" if bindings else str(f)
    except KeyError:
        return str(f)


def _local(name: str, prefix: str) -> str:
    if prefix and name.startswith(prefix + "."):
        return name[len(prefix) + 1:]
    return name


def _attr_str(node: Node) -> str:
    if node.op in LEAF_OPS:
        if node.op == "param":
            init = node.attrs.get("init")
            return "inline value" if init == "value" else \
                (f"init normal(std={node.attrs.get('std')})" if init == "normal" else f"init {init}")
        return "literal"
    parts = []
    for k, v in node.attrs.items():
        if isinstance(v, np.ndarray):
            continue
        if isinstance(v, (list, tuple)):
            v = "[" + ", ".join(str(x) for x in v) + "]"
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _stack_summary(groups: list[Group]) -> list[str]:
    """One line per repeat stack and per plain layer, for the totals."""
    out, seen = [], set()
    for grp in groups:
        if not grp.name:
            continue
        if grp.repeat:
            stack, _, count = grp.repeat
            if stack not in seen:
                seen.add(stack)
                out.append(f"{stack}.0-{count - 1} (repeat x{count})" if count > 1
                           else f"{stack}.0 (repeat x1)")
        else:
            out.append(grp.name)
    return out


def select_groups(groups: list[Group], expand: bool, layer: str | None):
    """Which groups to print, and for collapsed stacks the count each stands for."""
    if layer is not None:
        chosen = [grp for grp in groups if grp.name == layer or grp.name.startswith(layer + ".")]
        if not chosen:
            from ..dsl.errors import ArchError, did_you_mean
            raise ArchError(f"no layer named `{layer}`",
                            hint=did_you_mean(layer, [grp.name for grp in groups if grp.name]))
        return [(grp, 1) for grp in chosen]
    uniform = _uniform_stacks(groups)
    out = []
    for grp in groups:
        if grp.repeat and not expand and grp.repeat[0] in uniform:
            if grp.repeat[1] == 0:
                out.append((grp, grp.repeat[2]))
            continue
        out.append((grp, 1))
    return out


def _uniform_stacks(groups: list[Group]) -> set[str]:
    """The repeat stacks whose iterations are the same ops (one can stand for all); a stack
    whose iterations differ (Switch's every other layer a MoE) is shown expanded."""
    shapes: dict[str, set] = {}
    same: dict[str, bool] = {}
    for grp in groups:
        if not grp.repeat:
            continue
        stack = grp.repeat[0]
        body = frozenset((_local(n.id, grp.name), n.op) for n in grp.nodes)
        shapes.setdefault(stack, set()).add(body)
        same[stack] = len(shapes[stack]) == 1
    return {s for s, ok in same.items() if ok}


def dump_text(g: Graph, *, expand: bool = False, layer: str | None = None,
              bindings: Mapping[str, int] | None = None, title: str | None = None) -> str:
    bindings = dict(bindings or {})
    groups = layer_groups(g)
    lines = [f"model {g.name}" + (f"  ({g.meta['source']})" if g.meta.get("source") else "")]
    if title:
        lines[0] += f"  [{title}]"
    for nid in g.inputs:
        n = g.node(nid)
        lines.append(f"  input  {n.attrs['name']}: {n.type_str}")
    for name, nid in g.outputs.items():
        lines.append(f"  output {name}: {g.node(nid).type_str}")
    if bindings:
        lines.append("  sizes  " + ", ".join(f"{k}={v}" for k, v in sorted(bindings.items())))
    for grp, times in select_groups(groups, expand, layer):
        lines.append("")
        label = grp.name or "(model)"
        if times > 1:
            stack, _, count = grp.repeat
            label = f"{stack}.0 .. {stack}.{count - 1}   (repeat x{count}, one shown)"
        head = f"layer {label}" if grp.name else label
        stats = f"params {_fmt_int(grp.params)}"
        if times > 1:
            stats += f" each, {_fmt_int(grp.params * times)} total"
        flops = _fmt_flops(grp.flops, bindings)
        lines.append(f"{head}    {stats}    FLOPs {flops}" + (" each" if times > 1 else ""))
        rows = []
        for node in grp.nodes:
            if node.op == "getitem":
                continue
            args = ", ".join(_local(a, grp.name) for a in g.args(node.id))
            call = f"{node.op}({args})" if node.op not in LEAF_OPS else node.op
            p = node_params(node)
            f = node_flops(g, node)
            rows.append((_local(node.id, grp.name), call, node.type_str,
                         _fmt_int(p) if p else "", "" if f == 0 else _fmt_flops(f, bindings),
                         _attr_str(node), f"{node.span.line}" if node.span else ""))
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(7)]
        for r in rows:
            line = (f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}"
                    f"  {r[3]:>{widths[3]}}  {r[4]:>{widths[4]}}  {r[5]}")
            lines.append(line.rstrip())
    tot = totals(g, groups)
    lines.append("")
    summary = _stack_summary(groups)
    lines.append(f"layers: {tot['layers']}" + (f"  ({', '.join(summary)})" if summary else ""))
    lines.append(f"parameters: {_fmt_int(tot['params'])}")
    lines.append(f"FLOPs: {_fmt_flops(tot['flops'], bindings)}"
                 + ("" if isinstance(tot["flops"], int) or bindings else
                    "   (give sizes with --dim NAME=N or --input for a number)"))
    return "\n".join(lines) + "\n"


def _dim_json(d: DimLike):
    return d if isinstance(d, int) else str(d)


def _attr_json(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Dim):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_attr_json(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def dump_json(g: Graph, *, layer: str | None = None,
              bindings: Mapping[str, int] | None = None) -> str:
    bindings = dict(bindings or {})
    groups = layer_groups(g)
    chosen = [grp for grp, _ in select_groups(groups, True, layer)]
    tot = totals(g, groups)

    def io(nid, name):
        n = g.node(nid)
        return {"name": name, "dtype": n.dtype, "shape": [_dim_json(d) for d in n.shape]}

    def flops_value(f):
        try:
            return evaluate(f, bindings)
        except KeyError:
            return None

    doc = {
        "format": "archc.dump/1",
        "model": g.name,
        "source": g.meta.get("source"),
        "inputs": [io(n, g.node(n).attrs["name"]) for n in g.inputs],
        "outputs": [io(nid, name) for name, nid in g.outputs.items()],
        "layers": [{
            "name": grp.name,
            "repeat": None if not grp.repeat else
            {"name": grp.repeat[0], "index": grp.repeat[1], "count": grp.repeat[2]},
            "params": grp.params,
            "flops": _dim_json(grp.flops),
            "nodes": [{
                "id": n.id, "name": _local(n.id, grp.name), "op": n.op, "dtype": n.dtype,
                "shape": None if n.shape is None else [_dim_json(d) for d in n.shape],
                "args": g.args(n.id),
                "attrs": {k: _attr_json(v) for k, v in n.attrs.items()
                          if not (n.op in LEAF_OPS and k == "value")},
                "params": node_params(n),
                "flops": _dim_json(node_flops(g, n)),
                "span": str(n.span) if n.span else None,
            } for n in grp.nodes],
        } for grp in chosen],
        "totals": {"layers": tot["layers"], "params": tot["params"],
                   "flops": _dim_json(tot["flops"]), "bindings": bindings,
                   "flops_value": flops_value(tot["flops"])},
    }
    return json.dumps(doc, indent=2) + "\n"


def _dot_id(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Picture:
    """Which node of the picture stands for each graph value: itself when shown; for a
    getitem, its tuple's port; for a folded stack's later iteration, the same node of
    iteration 0 (the cluster labelled xN stands for all of them)."""

    def __init__(self, g: Graph, shown: set[str], folded: set[str]):
        self.g, self.shown, self.folded = g, shown, folded

    def source(self, nid: str) -> tuple[str, int | None] | None:
        node = self.g.node(nid)
        if node.op == "getitem":
            src = self.source(self.g.args(nid)[0])
            return None if src is None else (src[0], node.attrs.get("index", 0))
        if nid in self.shown:
            return nid, None
        _, rep = group_key(self.g, node.scope)
        if rep is not None and rep[0] in self.folded:
            head = f"{rep[0]}.{rep[1]}"
            twin = f"{rep[0]}.0" + nid[len(head):] if nid.startswith(head) else None
            if twin in self.shown:
                return twin, None
        return None


def _scope_tree(nodes: list[Node], top: str) -> dict:
    """{sub-scope: (its nodes, its own tree)} below `top`, for nested clusters."""
    tree: dict = {"": []}
    for n in nodes:
        if n.op == "getitem":
            continue               # drawn as its tuple's port
        rest = _local(n.scope, top) if n.scope != top else ""
        branch = tree
        for part in [p for p in rest.split(".") if p] if top or rest else []:
            branch = branch.setdefault(part, {"": []})
        branch[""].append(n)
    return tree


def dump_dot(g: Graph, *, expand: bool = False, layer: str | None = None,
             bindings: Mapping[str, int] | None = None) -> str:
    """The graph as Graphviz DOT, one connected picture: clusters nest by layer scope; a
    folded `repeat` stack is one cluster labelled xN whose nodes stand for every iteration
    (a value read after the stack is drawn from it); a tuple-valued node is a record with a
    port per part; every edge is drawn once; fused ops are filled blue, with what they
    compute as the tooltip; each node shows its op, shape and FLOPs."""
    bindings = dict(bindings or {})
    groups = layer_groups(g)
    chosen = select_groups(groups, expand, layer)
    shown = {n.id for grp, _ in chosen for n in grp.nodes if n.op != "getitem"} | set(g.inputs)
    folded = {grp.repeat[0] for grp, times in chosen if times > 1}
    pic = _Picture(g, shown, folded)
    lines = [f"digraph {_dot_id(g.name)} {{", "  rankdir=TB;",
             '  node [shape=box, fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555"];']
    for nid in g.inputs:
        n = g.node(nid)
        lines.append(f"  {_dot_id(nid)} [label={_dot_id(n.attrs['name'] + chr(10) + n.type_str)}"
                     ", shape=ellipse];")
    outside: set[str] = set()
    for i, (grp, times) in enumerate(chosen):
        label = grp.name or "model"
        if times > 1:
            label = f"{grp.repeat[0]} x{times}"
        label += f"\n{_fmt_int(grp.params)} params"
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_dot_id(label)}; style=rounded;")
        _dot_cluster(g, _scope_tree(grp.nodes, grp.name), grp.name, f"cluster_{i}", lines,
                     "    ", bindings)
        lines.append("  }")
    edges: list[str] = []
    seen: set[tuple] = set()
    for nid in g.topo():
        if nid not in shown or g.node(nid).op in ("input",):
            continue
        for a in g.args(nid):
            src = pic.source(a)
            if src is None:                   # outside the layer asked for: a stub
                if a not in outside:
                    outside.add(a)
                    lines.append(f"  {_dot_id(a)} [label={_dot_id(a)}, shape=plaintext];")
                src = (a, None)
            key = (src, nid)
            if key in seen:
                continue
            seen.add(key)
            tail = _dot_id(src[0]) + (f":p{src[1]}" if src[1] is not None else "")
            edges.append(f"  {tail} -> {_dot_id(nid)};")
    for name, nid in g.outputs.items():
        src = pic.source(nid)
        if src is not None:
            lines.append(f"  {_dot_id('output:' + name)} [label={_dot_id(name)}, shape=ellipse];")
            tail = _dot_id(src[0]) + (f":p{src[1]}" if src[1] is not None else "")
            edges.append(f"  {tail} -> {_dot_id('output:' + name)};")
    lines += edges
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_cluster(g: Graph, tree: dict, scope: str, cid: str, lines: list[str], pad: str,
                 bindings: Mapping[str, int]) -> None:
    for n in tree[""]:
        lines.append(f"{pad}{_dot_node(g, n, scope, bindings)}")
    for k, (part, sub) in enumerate((p, t) for p, t in tree.items() if p):
        inner = f"{scope}.{part}" if scope else part
        lines.append(f"{pad}subgraph {cid}_{k} {{")
        lines.append(f"{pad}  label={_dot_id(part)}; style=dashed;")
        _dot_cluster(g, sub, inner, f"{cid}_{k}", lines, pad + "  ", bindings)
        lines.append(f"{pad}}}")


def _dot_node(g: Graph, n: Node, scope: str, bindings: Mapping[str, int]) -> str:
    name = _local(n.id, scope) if scope else n.id
    flops = node_flops(g, n)
    cost = f"\n{_fmt_flops(flops, bindings)} FLOPs" if flops else ""
    spec = OPS.get(n.op)
    style = ""
    if n.op == "param":
        style = ", style=filled, fillcolor=lightgrey"
    elif spec is not None and spec.has("fused"):
        style = f", style=filled, fillcolor=lightblue, tooltip={_dot_id('fused: ' + spec.doc)}"
    if n.dtype == "tuple":
        # an HTML-like table: a port per part (Graphviz's record shapes lose edges)
        head = "<br/>".join(_html(t) for t in f"{name}\n{n.op}{cost}".split("\n"))
        cells = "".join(f'<td port="p{i}">{i}: {_html(str(TT(s, d)))}</td>'
                        for i, (s, d) in enumerate(n.parts))
        fill = ' bgcolor="lightblue"' if "lightblue" in style else ""
        table = (f'<<table border="0" cellborder="1" cellspacing="0"{fill}><tr>'
                 f'<td colspan="{len(n.parts)}">{head}</td></tr><tr>{cells}</tr></table>>')
        tip = style[style.index(", tooltip"):] if "tooltip" in style else ""
        return f"{_dot_id(n.id)} [shape=plain, label={table}{tip}];"
    return f"{_dot_id(n.id)} [label={_dot_id(f'{name}{chr(10)}{n.op} {n.type_str}{cost}')}{style}];"


def render_dot(dot: str, fmt: str) -> bytes:
    """The picture drawn by Graphviz's `dot` program (svg or png); a clear error where it
    is not installed or fails."""
    import shutil
    import subprocess
    from ..dsl.errors import ArchError
    exe = shutil.which("dot")
    if exe is None:
        raise ArchError("drawing the picture (--format svg, png, html) needs Graphviz's `dot` "
                        "program, which is not installed", hint="apt-get install graphviz (or brew install "
                        "graphviz); --format dot writes the graph for it")
    try:
        p = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True,
                           timeout=300)
    except subprocess.TimeoutExpired:
        raise ArchError("Graphviz took more than 5 minutes to draw the graph",
                        hint="draw one layer with --layer NAME") from None
    if p.returncode != 0:
        raise ArchError(f"Graphviz failed: {p.stderr.decode(errors='replace').strip()[:300]}")
    return p.stdout
