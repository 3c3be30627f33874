"""fuse_ffn: linear+activation, GLU gate/up merged on concatenated weights, whole FFNs;
a hand-written FFN fuses exactly like the FFN layer; shared intermediates do not fuse."""
from __future__ import annotations

from pathlib import Path

from archc.compiler.passes.fuse_ffn import fuse_ffn
from archc.compiler.passes.simplify import simplify
from archc.compiler.verify import verify
from archc.dsl.lower import lower

from .conftest import assert_same_outputs, op_counts, random_inputs

ROOT = Path(__file__).resolve().parents[2]


def _run(g):
    r = fuse_ffn(simplify(g).graph)
    verify(r.graph, "fuse_ffn")
    return r


def _ffn_nodes(g):
    return [(n.op, dict(n.attrs), [g.node(a).op for a in g.args(n.id)])
            for n in g.nodes() if n.op not in ("input", "param")]


def test_hand_written_ffn_fuses_like_the_library_layer(arch_file):
    hand = lower(arch_file("""
        model m(x: float[T, 4]) {
            param W1: float[4, 6]
            param b1: float[6]
            param W2: float[6, 4]
            param b2: float[4]
            return relu(x @ W1 + b1) @ W2 + b2
        }
    """, "hand.arch"))
    lib = lower(arch_file("""
        model m(x: float[T, 4]) {
            return FFN(x, 6, act="relu") as mlp
        }
    """, "lib.arch"))
    rh, rl = _run(hand), _run(lib)
    assert _ffn_nodes(rh.graph) == _ffn_nodes(rl.graph) == [
        ("ffn", {"act": "relu", "glu": False, "bias1": True, "bias2": True},
         ["input", "param", "param", "param", "param"])]
    assert rh.stats == rl.stats
    assert_same_outputs(hand, rh.graph)
    assert_same_outputs(lib, rl.graph)


def test_ffn_example_fuses_to_one_op():
    g = lower(ROOT / "examples" / "ffn.arch")
    r = _run(g)
    assert [n.op for n in r.graph.nodes() if n.op not in ("input", "param")] == ["ffn"]
    assert r.coverage == {"FFN": (1, 1)}
    assert_same_outputs(g, r.graph, tol=1e-12)


def test_glu_gate_and_up_merge(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            y = GLU(x, 12, act="silu", bias=true) as mlp
            return y
        }
    """))
    r = _run(g)
    c = op_counts(r.graph)
    assert (c["ffn"], c["linear_glu"], c["concat"], c["mul"], c["silu"]) == (1, 0, 2, 0, 0)
    (ffn,) = [n for n in r.graph.nodes() if n.op == "ffn"]
    assert ffn.attrs["glu"] is True and ffn.attrs["act"] == "silu"
    w1 = r.graph.node(r.graph.args(ffn.id)[1])
    assert w1.op == "concat" and w1.shape == (8, 24) and w1.id == "mlp.gate_up_weight"
    assert [r.graph.node(a).attrs["name"] for a in r.graph.args(w1.id)] == \
        ["mlp.gate.weight", "mlp.up.weight"]
    assert r.coverage == {"FFN": (1, 1), "GLU": (1, 1)}
    assert_same_outputs(g, r.graph)


def test_glu_of_different_inputs_does_not_merge(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8], z: float[B, T, 8]) {
            h = silu(Linear(x, 12) as gate) * Linear(z, 12) as up
            return Linear(h, 8) as down
        }
    """))
    r = _run(g)
    c = op_counts(r.graph)
    assert (c["linear_glu"], c["linear_act"], c["mul"], c["ffn"]) == (0, 1, 1, 0)
    assert_same_outputs(g, r.graph)


def test_hidden_activation_read_elsewhere_is_rejected(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            layer mlp {
                h = gelu(Linear(x, 16) as fc)
                y = Linear(h, 8) as proj
            }
            return y = y, h = h
        }
    """))
    r = _run(g)
    c = op_counts(r.graph)
    assert (c["ffn"], c["linear_act"], c["linear"]) == (0, 1, 1)
    assert r.coverage == {"FFN": (0, 1)}
    (why,) = r.rejected
    assert why.startswith("ffn: FFN at mlp.proj (line 4): the hidden activation mlp.fc "
                          "(line 3) has a second consumer")
    assert_same_outputs(g, r.graph)


def test_product_read_before_activation_is_rejected(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            p = Linear(x, 8) as fc
            return relu(p) + p
        }
    """))
    r = _run(g)
    assert op_counts(r.graph)["linear_act"] == 0
    assert r.rejected[0].startswith("linear+act: linear at fc (line 2) has a second consumer")
    assert_same_outputs(g, r.graph, random_inputs(g))


def test_a_declared_activation_fuses_everywhere_with_no_list_to_edit(arch_file):
    """relu2 is declared once (dsl/ops/elementwise.py, activation trait) with its ref_ and
    kernel branch: FFN/GLU accept it, fuse_ffn fuses it, and both executors agree."""
    import numpy as np
    import archc
    from archc.compiler.pipeline import run_pipeline
    path = arch_file("""
        model m(x: float[B, T, 8]) {
            h = FFN(x, 16, act="relu2", std=0.5) as ffn
            g = GLU(h, 16, act="relu2", std=0.5) as glu
            return relu2(g)
        }""")
    g = lower(path)
    res = run_pipeline(g)
    counts = op_counts(res.graph)        # GLU's down product takes the final relu2 instead
    assert (counts["ffn"], counts["linear_glu"], counts["linear_act"]) == (1, 1, 1)
    assert counts["relu2"] == 0
    m = archc.load(path)
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    (want,) = m.run(x=x, executor="reference").values()
    (got,) = m.run(x=x, executor="numba").values()
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)   # float32, squared
