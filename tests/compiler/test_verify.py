"""The verifier: each kind of malformed graph is reported, with the node's span."""
from __future__ import annotations

import pytest

from archc.compiler.verify import VerifyError, kernel_ops, problems, verify
from archc.dsl.lower import lower

SRC = """
model m(x: float[T, 4]) {
    param W: float[4, 6]
    y = relu(x @ W)
    a, b = split(y, 2)
    return a * b
}
"""


@pytest.fixture
def g(arch_file):
    return lower(arch_file(SRC))


def test_lowered_graph_is_sound(g):
    assert problems(g) == []
    verify(g, "x")


def test_every_op_has_a_kernel_read_without_importing():
    assert {"add_layernorm", "ffn", "linear_glu", "rope_attention", "matmul"} <= kernel_ops()


def test_wrong_recorded_shape(g):
    relu = next(n for n in g.nodes() if n.op == "relu")
    g.set_node(relu.with_(shape=(7, 6)))
    found = dict(problems(g))
    assert found[relu.id].startswith("recorded type float[7, 6] but its arguments give")


def test_gap_in_argument_positions(g):
    mm = next(n for n in g.nodes() if n.op == "matmul")
    src, _, key = next(iter(g.nx.in_edges(mm.id, keys=True)))
    data = g.nx.edges[src, mm.id, key]
    g.nx.remove_edge(src, mm.id, key)
    g.nx.add_edge(src, mm.id, key=5, pos=data["pos"] + 5)
    assert any("argument positions" in what for _, what in problems(g))


def test_unknown_op_and_bad_getitem(g):
    relu = next(n for n in g.nodes() if n.op == "relu")
    g.set_node(relu.with_(op="frobnicate"))
    item = next(n for n in g.nodes() if n.op == "getitem")
    g.set_node(item.with_(attrs={"index": 9}))
    found = dict(problems(g))
    assert found[relu.id] == "unknown op 'frobnicate'"
    assert found[item.id] == "getitem does not index a part of a multi-output node"


def test_error_names_pass_history_and_span(g):
    relu = next(n for n in g.nodes() if n.op == "relu")
    g.set_node(relu.with_(dtype="int64"))
    with pytest.raises(VerifyError) as e:
        verify(g, "fuse_ffn", ["simplify", "fuse_residual_norm"])
    text = str(e.value)
    assert text.startswith("graph is malformed after pass `fuse_ffn` (passes before it: "
                           "simplify, fuse_residual_norm)")
    assert "model.arch:3:9: relu" in text
