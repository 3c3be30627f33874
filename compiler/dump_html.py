"""`archc dump -f html`: one self-contained page a person can read (no network: the picture is
Graphviz's SVG inlined, the style and script are inline).

    model gpt2 (examples/gpt2.arch)   inputs, outputs, sizes, totals
    picture                           the DOT picture (dump.dump_dot) drawn as SVG; a click
                                      on a node opens its row in the table
    layers                            per layer: params, FLOPs/token, activation peak, KV
                                      bytes (report.layer_rows); each layer opens onto its
                                      scopes (nested, collapsible) and their nodes
    fusion report                     per pass: nodes before/after, rewrites fired, fusion
                                      coverage, and every rejected candidate with the reason
    KV-cache plan, memory plan        the plans' entries and buffers

The table lists every layer, expanded, whatever the picture folds; the figures come from
the compiled graph of the pipeline run given (they are about what runs), the nodes from the
graph shown (as written, or after the passes asked for).
"""
from __future__ import annotations

from html import escape
from typing import Mapping

from ..dsl.graph import Graph, Node
from ..dsl.ops import OPS
from .dump import (LEAF_OPS, _attr_str, _fmt_flops, _fmt_int, _local, _scope_tree, layer_groups,
                   node_flops, node_params)
from .report import LayerRow
from .sizes import fmt_bytes

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 2px 8px; text-align: left; }
th { border-bottom: 1px solid #999; } .num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12px; }
.picture { overflow: auto; max-height: 80vh; border: 1px solid #ccc; padding: 4px; }
.picture.fit svg { width: 100%; height: auto; }
.picture g.node { cursor: pointer; }
.row { display: grid; grid-template-columns: minmax(14em, 1fr) repeat(5, 9em); gap: 0 8px; }
.row > span:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
.head { font-weight: 600; border-bottom: 1px solid #999; padding-left: 1.2em; }
details.layer > summary, details.scope > summary { cursor: pointer; }
details.layer > summary .row { display: inline-grid; width: calc(100% - 1.5em); }
details.layer { border-bottom: 1px solid #eee; }
details.scope { margin-left: 1.4em; }
details.scope > summary { color: #035; }
table.nodes { margin: 2px 0 4px 1.4em; } table.nodes td { padding: 0 8px; }
tr.hit { background: #ffec99; }
.fused { background: #d6ecff; }
.total { font-weight: 600; border-top: 1px solid #999; padding-left: 1.2em; }
.note { color: #666; }
ul.why { margin: .2em 0; }
"""

SCRIPT = """
function setAll(open) {
  document.querySelectorAll('details').forEach(function (d) { d.open = open; });
}
document.getElementById('open-all').addEventListener('click', function () { setAll(true); });
document.getElementById('close-all').addEventListener('click', function () { setAll(false); });
document.getElementById('fit').addEventListener('change', function (e) {
  document.querySelector('.picture').classList.toggle('fit', e.target.checked);
});
document.querySelectorAll('.picture g.node').forEach(function (g) {
  g.addEventListener('click', function () {
    var title = g.querySelector('title');
    if (!title) { return; }
    var row = document.querySelector('tr[data-node="' + CSS.escape(title.textContent) + '"]');
    if (!row) { return; }
    for (var p = row.parentElement; p; p = p.parentElement) {
      if (p.tagName === 'DETAILS') { p.open = true; }
    }
    document.querySelectorAll('tr.hit').forEach(function (r) { r.classList.remove('hit'); });
    row.classList.add('hit');
    row.scrollIntoView({block: 'center'});
  });
});
"""


def dump_html(shown: Graph, res, rows: list[LayerRow], *, svg: str | None,
              picture_note: str = "", bindings: Mapping[str, int] | None = None) -> str:
    """The page: `shown` is the graph drawn and listed, `res` the PipelineResult whose plans
    and statistics are reported, `rows` its per-layer figures, `svg` the picture (None when
    it could not be drawn; `picture_note` says why)."""
    bindings = dict(bindings or {})
    g = shown
    title = f"model {g.name}" + (f" ({g.meta['source']})" if g.meta.get("source") else "")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{escape(title)}</h1>", _summary(g, rows, bindings, res)]
    out.append('<h2 id="picture">Picture</h2>')
    if svg is not None:
        out.append('<p class="note"><label><input type="checkbox" id="fit" checked> fit to width</label>'
                   " &middot; click a node to find it in the layer table; fused ops are blue"
                   "</p>")
        out.append(f'<div class="picture fit">{_inline_svg(svg)}</div>')
    else:
        out.append('<input type="checkbox" id="fit" hidden>')
        out.append(f'<p class="note">no picture: {escape(picture_note)}</p>')
    out.append('<h2 id="layers">Layers</h2>')
    out.append('<p><button id="open-all">open every scope</button> '
               '<button id="close-all">close every scope</button></p>')
    out.append(_layers(g, rows, bindings))
    out.append('<h2 id="fusion">Fusion report</h2>')
    out.append(_fusion(res))
    out.append('<h2 id="kv">KV-cache plan</h2>')
    out.append(_kv(res.graph.meta.get("kv_plan"), res))
    out.append('<h2 id="memory">Memory plan</h2>')
    out.append(_memory(res.graph.meta.get("memory_plan"), res))
    out.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"


def _bytes(n: int) -> str:
    """Bytes in the unit that fits, exact on hover ("" for none)."""
    return f'<abbr title="{n:,} B">{fmt_bytes(n).split(" (")[0]}</abbr>' if n else ""


def _inline_svg(svg: str) -> str:
    """Graphviz's document without its XML prolog and doctype (not allowed inside HTML)."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else ""


def _summary(g: Graph, rows: list[LayerRow], bindings: Mapping[str, int], res) -> str:
    items = []
    for nid in g.inputs:
        n = g.node(nid)
        items.append(f"input <code>{escape(n.attrs['name'])}: {escape(n.type_str)}</code>")
    for name, nid in g.outputs.items():
        items.append(f"output <code>{escape(name)}: {escape(g.node(nid).type_str)}</code>")
    total = rows[-1] if rows else None
    if total is not None:
        items.append(f"parameters {_fmt_int(total.params)}; "
                     f"FLOPs per token {_fmt_int(round(total.flops_per_token))}")
    if bindings:
        items.append("sizes " + ", ".join(f"{k}={v}" for k, v in sorted(bindings.items())))
    passes = " &rarr; ".join(escape(n) for n, _ in res.steps) or "none"
    items.append(f"passes run for the figures and plans: {passes}")
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _layers(g: Graph, rows: list[LayerRow], bindings: Mapping[str, int]) -> str:
    groups = {grp.name or "(model)": grp for grp in layer_groups(g)}
    head = ("layer", "params", "FLOPs/token", "act. peak", "KV B/token", "KV bytes")
    out = ['<div class="row head">' + "".join(f"<span>{h}</span>" for h in head) + "</div>"]
    for r in rows[:-1]:
        figures = (_fmt_int(r.params), _fmt_int(round(r.flops_per_token)), _bytes(r.act_peak),
                   _fmt_int(r.kv_per_token) if r.kv_per_token else "", _bytes(r.kv_bytes))
        cells = f"<span>{escape(r.name)}</span>" + "".join(f"<span>{f}</span>" for f in figures)
        grp = groups.pop(r.name, None)
        body = _scope(g, _scope_tree(grp.nodes, grp.name), grp.name, bindings) if grp else ""
        out.append(f'<details class="layer" id="layer-{escape(r.name, quote=True)}">'
                   f'<summary><div class="row">{cells}</div></summary>{body}</details>')
    for name, grp in groups.items():      # a layer only the shown graph has
        body = _scope(g, _scope_tree(grp.nodes, grp.name), grp.name, bindings)
        out.append(f'<details class="layer" id="layer-{escape(name, quote=True)}"><summary>'
                   f'<div class="row"><span>{escape(name)}</span></div></summary>{body}</details>')
    if rows:
        t = rows[-1]
        figures = (_fmt_int(t.params), _fmt_int(round(t.flops_per_token)), _bytes(t.act_peak),
                   _fmt_int(t.kv_per_token), _bytes(t.kv_bytes))
        out.append('<div class="row total"><span>total</span>'
                   + "".join(f"<span>{f}</span>" for f in figures) + "</div>")
        out.append('<p class="note">act. peak: bytes of activations alive while the layer '
                   "runs (total: the planned arena); KV B/token: cache bytes one more token "
                   "of context adds</p>")
    return "\n".join(out)


def _scope(g: Graph, tree: dict, scope: str, bindings: Mapping[str, int]) -> str:
    parts = []
    if tree[""]:
        parts.append('<table class="nodes">'
                     + "".join(_node_row(g, n, scope, bindings) for n in tree[""]) + "</table>")
    for name, sub in tree.items():
        if name:
            inner = f"{scope}.{name}" if scope else name
            parts.append(f'<details class="scope"><summary>{escape(name)}</summary>'
                         f"{_scope(g, sub, inner, bindings)}</details>")
    return "".join(parts)


def _node_row(g: Graph, n: Node, scope: str, bindings: Mapping[str, int]) -> str:
    args = ", ".join(_local(a, scope) for a in g.args(n.id))
    call = f"{n.op}({args})" if n.op not in LEAF_OPS else n.op
    p, f = node_params(n), node_flops(g, n)
    fused = ' class="fused"' if n.op in OPS and OPS[n.op].has("fused") else ""
    cells = (_local(n.id, scope), call, n.type_str, _fmt_int(p) if p else "",
             "" if f == 0 else _fmt_flops(f, bindings) + " FLOPs", _attr_str(n))
    return (f'<tr data-node="{escape(n.id, quote=True)}"{fused}>'
            + "".join(f'<td class="mono">{escape(c)}</td>' for c in cells) + "</tr>")


def _fusion(res) -> str:
    out = ['<table><tr><th>pass</th><th class="num">nodes before</th>'
           '<th class="num">after</th><th>rewrites fired</th></tr>']
    for (name, step), (_, before, after) in zip(res.steps, res.sizes):
        fired = ", ".join(f"{k} &times;{v}" for k, v in sorted(step.stats.items())) or "no change"
        out.append(f'<tr><td>{escape(name)}</td><td class="num">{before}</td>'
                   f'<td class="num">{after}</td><td>{fired}</td></tr>')
    out.append("</table>")
    cov = {what: fs for what, fs in res.coverage().items() if fs[1]}
    if cov:
        out.append("<p>fusion coverage: " + ", ".join(
            f"<b>{f}/{s}</b> {escape(what)} fused" for what, (f, s) in cov.items()) + "</p>")
    rejected = [(name, step.rejected) for name, step in res.steps if step.rejected]
    if not rejected:
        out.append("<p>no candidate was rejected</p>")
    for name, why in rejected:
        verb = "not lowered" if name == "lower_layers" else "not fused"
        out.append(f"<p>{escape(name)}: {len(why)} candidate{'s' if len(why) != 1 else ''} "
                   f"{verb}</p><ul class=\"why\">"
                   + "".join(f"<li>{escape(w)}</li>" for w in why) + "</ul>")
    notes = [n for _, step in res.steps for n in step.notes]
    if notes:
        out.append("<ul>" + "".join(f'<li class="note">note: {escape(n)}</li>' for n in notes)
                   + "</ul>")
    return "\n".join(out)


def _kv(kp, res) -> str:
    if kp is None:
        why = ("the plan_kv_cache pass did not run" if res.result("plan_kv_cache") is None else
               "the model has no cached attention, or no context length")
        return f'<p class="note">no KV-cache plan: {why}</p>'
    out = [f"<p>batch B={kp.batch}, S_max={kp.max_seq} ({escape(kp.max_seq_from)}): "
           f"{fmt_bytes(kp.total_bytes)} in all, {_fmt_int(kp.bytes_per_token())} bytes per "
           "token of context per sequence</p>",
           '<table><tr><th>layer</th><th>kind</th><th>K, V shape (B, H_kv, slots, D)</th>'
           '<th class="num">K+V bytes</th><th class="num">pos bytes</th>'
           '<th class="num">offset</th></tr>']
    for e in kp.entries:
        shape = f"({kp.batch}, {e.kv_heads}, {e.slots}, {e.head_dim})"
        out.append(f"<tr><td>{escape(e.scope or e.node)}</td><td>{e.kind}</td>"
                   f'<td class="mono">{shape}</td><td class="num">{_fmt_int(2 * e.kv_bytes)}</td>'
                   f'<td class="num">{_fmt_int(e.pos_bytes)}</td>'
                   f'<td class="num">{_fmt_int(e.k_offset)}</td></tr>')
    out.append("</table>")
    out.extend(f"<p>warning: {escape(w)}</p>" for w in kp.warnings)
    return "\n".join(out)


def _memory(mp, res) -> str:
    if mp is None:
        why = ("the plan_memory pass did not run" if res.result("plan_memory") is None
               else "no plan")
        return f'<p class="note">no memory plan: {why}</p>'
    out = [f"<p>{escape(mp.summary())}</p>",
           f"<details><summary>{len(mp.slots)} buffers (offset, bytes, steps alive)</summary>"
           '<table><tr><th>value</th><th class="num">offset</th><th class="num">bytes</th>'
           '<th class="num">from step</th><th class="num">to step</th></tr>']
    for owner, (offset, size) in sorted(mp.slots.items(), key=lambda kv: (kv[1][0], kv[0])):
        born, last = mp.lifetimes.get(owner, ("", ""))
        out.append(f'<tr><td class="mono">{escape(owner)}</td><td class="num">'
                   f'{_fmt_int(offset)}</td><td class="num">{_fmt_int(size)}</td>'
                   f'<td class="num">{born}</td><td class="num">{last}</td></tr>')
    out.append("</table></details>")
    for what, table in (("computed in place (value: the buffer it overwrites)", mp.inplace),
                        ("views (value: what it views)", mp.views),
                        ("outside the arena (value: why)", mp.outside)):
        if table:
            out.append(f"<details><summary>{len(table)} {what}</summary><table>"
                       + "".join(f'<tr><td class="mono">{escape(k)}</td>'
                                 f'<td class="mono">{escape(str(v))}</td></tr>'
                                 for k, v in table.items()) + "</table></details>")
    return "\n".join(out)
