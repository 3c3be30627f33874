"""The DOT picture is right by construction, for every example model, folded, expanded and
after the pipeline: one connected graph, every node inside its layer's cluster, no edge
twice, tuple parts as ports (no stray nodes), and as many nodes as the graph shows."""
from __future__ import annotations

import re
from pathlib import Path

import networkx as nx
import pytest

from archc.compiler.dump import dump_dot, group_key
from archc.compiler.pipeline import run_pipeline
from archc.dsl.lower import lower

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.arch"))
SMALL = {"n_layer": 2}

NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[(.*)\];$')
EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"(?::(p\d+))? -> "((?:[^"\\]|\\.)*)";$')


def parse(dot: str):
    """(nodes {id: (cluster path, attrs)}, edges [(src, port, dst)], top-level cluster labels)."""
    nodes, edges, stack, tops = {}, [], [], []
    for line in dot.splitlines():
        if line.strip().startswith("subgraph "):
            stack.append(line.split()[1])
            continue
        if line.strip() == "}" and stack:
            stack.pop()
            continue
        m = EDGE.match(line)
        if m:
            edges.append((m.group(1), m.group(2), m.group(3)))
            continue
        m = NODE.match(line)
        if m:
            assert m.group(1) not in nodes, f"node drawn twice: {m.group(1)}"
            nodes[m.group(1)] = (tuple(stack), m.group(2))
        if line.strip().startswith("label=") and len(stack) == 1:
            tops.append(line.split('"')[1])
    return nodes, edges, tops


def graph_for(name: str, optimised: bool):
    path = ROOT / "examples" / name
    try:
        g = lower(path, None, SMALL)
    except Exception:                       # a model without n_layer
        g = lower(path)
    return run_pipeline(g, skip=("plan_kv_cache", "plan_memory")).graph if optimised else g


@pytest.mark.parametrize("optimised", [False, True], ids=["lowered", "-O"])
@pytest.mark.parametrize("expand", [False, True], ids=["folded", "expanded"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_dot_is_one_connected_picture(name, expand, optimised):
    g = graph_for(name, optimised)
    nodes, edges, _ = parse(dump_dot(g, expand=expand))
    pic = nx.Graph()
    pic.add_nodes_from(nodes)
    for src, _, dst in edges:
        assert src in nodes and dst in nodes, f"edge to an undrawn node: {src} -> {dst}"
        pic.add_edge(src, dst)
    assert nx.is_connected(pic)
    assert len(edges) == len(set(edges)), "an edge drawn twice"
    drawn = {n for n in nodes if not n.startswith("output:")}
    values = {n.id for n in g.nodes() if n.op != "getitem"}
    assert drawn <= values                           # no stray nodes (tuple parts are ports)
    if expand:
        assert drawn == values
    for nid in drawn - set(g.inputs):
        path, _ = nodes[nid]
        assert path, f"{nid} is outside every cluster"
        # nested clusters follow the node's scope below its layer
        key, _ = group_key(g, g.node(nid).scope)
        depth = len([p for p in g.node(nid).scope[len(key):].split(".") if p])
        assert len(path) == 1 + depth, (nid, path)
    for src, port, _ in edges:
        if port is not None:
            assert g.node(src).dtype == "tuple"


def test_a_folded_stack_is_one_cluster_labelled_with_its_count():
    g = graph_for("gpt2.arch", False)
    _, _, tops = parse(dump_dot(g))
    assert any(t.startswith("layers x2") for t in tops)
    _, _, tops = parse(dump_dot(g, expand=True))
    assert {"layers.0", "layers.1"} <= {t.split("\\n")[0] for t in tops}
    # iterations that differ (after -O, layer 0's first norm has no residual to fuse)
    # are drawn one by one, never one standing for the others
    _, _, tops = parse(dump_dot(graph_for("gpt2.arch", True)))
    assert not any(" x2" in t for t in tops)


def test_fused_nodes_are_marked_with_what_they_compute():
    g = graph_for("llama.arch", True)
    nodes, _, _ = parse(dump_dot(g))
    fused = [a for _, a in nodes.values() if "lightblue" in a]
    assert fused and all("tooltip=" in a for a in fused)
    assert any("FLOPs" in a for _, a in nodes.values())


def test_svg_and_png_are_drawn_by_graphviz_or_refused_clearly(tmp_path, monkeypatch, capsys):
    import shutil
    from archc.cli import main
    out = tmp_path / "g.svg"
    if shutil.which("dot") is not None:
        assert main(["dump", str(ROOT / "examples" / "ffn.arch"), "-f", "svg", "-o",
                     str(out)]) == 0
        assert out.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    monkeypatch.setenv("PATH", str(tmp_path))        # no `dot` here
    assert main(["dump", str(ROOT / "examples" / "ffn.arch"), "-f", "png"]) == 2
    assert "needs Graphviz's `dot`" in capsys.readouterr().err
