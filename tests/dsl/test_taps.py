"""dsl/taps.py: a tap names a scope's value, an MoE's router or a node, inside repeats too."""
from __future__ import annotations

import pytest

from archc.dsl.errors import ArchError
from archc.dsl.lower import lower
from archc.dsl.taps import add_taps, scope_value

MODEL = """
config { d = 8 }
block Layer(x: float[B, T, d]) {
    h = RMSNorm(x) as norm
    x = x + FFN(h, 16) as ffn
    x = x + MoE(RMSNorm(x) as norm2, 4, 16, top_k=2, capacity=3) as moe
    return x
}
model m(x: float[B, T, d]) {
    repeat 3 as layers {
        x = Layer(x)
    }
    return y = x
}
"""


@pytest.fixture
def graph(arch_file):
    return lower(arch_file(MODEL))


def test_a_scope_is_the_value_it_hands_on(graph):
    g = add_taps(graph, ["layers.1.ffn", "layers.1"])
    assert list(g.outputs) == ["y", "layers.1.ffn", "layers.1"]
    ffn = g.node(g.outputs["layers.1.ffn"])
    assert ffn.scope.startswith("layers.1.ffn") and ffn.op == "linear"     # the down product
    block = g.outputs["layers.1"]
    assert block == scope_value(g, "layers.1")
    assert [u for u, _ in g.users(block)] and all(
        g.node(u).scope.startswith("layers.2") for u, _ in g.users(block))   # feeds layer 2
    assert list(graph.outputs) == ["y"]                                       # a copy


def test_routers_inside_every_repeat(graph):
    g = add_taps(graph, ["layers.*.moe.router"])
    names = [n for n in g.outputs if n != "y"]
    assert names == ["layers.0.moe.router", "layers.1.moe.router", "layers.2.moe.router"]
    r = g.node(g.outputs["layers.2.moe.router"])
    assert r.op == "moe_router" and r.dtype == "int64" and r.shape[-1] == 2
    assert r.attrs["capacity"] == 3 and r.attrs["top_k"] == 2
    moe = next(n for n in g.nodes() if n.op == "moe" and n.scope == "layers.2.moe")
    assert g.args(r.id) == g.args(moe.id)[:2]                   # the same tokens and router


def test_a_node_id(graph):
    nid = next(n.id for n in graph.nodes() if n.op == "rmsnorm")
    assert add_taps(graph, [nid]).outputs[nid] == nid


def test_an_unknown_tap_suggests(graph):
    with pytest.raises(ArchError) as e:
        add_taps(graph, ["layers.1.fnn"])
    assert e.value.message == "--tap layers.1.fnn: the model has no value of that name"
    assert e.value.hint == "did you mean `layers.1.ffn`?"
