"""simplify: dropout removal, matmul+bias -> linear, transpose folding, identities,
constant folding, CSE and DCE; each checked by op counts and unchanged outputs."""
from __future__ import annotations

import numpy as np

from archc.compiler.passes.simplify import simplify

from .conftest import assert_same_outputs, lower_and_run, op_counts


def _run(arch_file, src):
    return lower_and_run(arch_file(src), simplify)


def test_matmul_plus_bias_becomes_linear_and_dropout_goes(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 4]) {
            param W: float[4, 6]
            param b: float[6]
            return dropout(x @ W + b, 0.1) @ W2(x)
        }
        block W2(x) {
            param V: float[6, 3]
            return V
        }
    """)
    c = op_counts(r.graph)
    assert (c["linear"], c["matmul"], c["add"], c["dropout"]) == (2, 0, 0, 0)
    assert r.stats["dropout"] == 1 and r.stats["matmul->linear"] == 2
    lin = [n for n in r.graph.nodes() if n.op == "linear"]
    assert [len(r.graph.args(n.id)) for n in lin] == [3, 2]
    assert_same_outputs(g, r.graph)


def test_bias_that_is_not_1d_is_explained(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 4]) {
            param b: float[1, 6]
            return Linear(x, 6, bias=false) as fc + b
        }
    """)
    assert op_counts(r.graph)["add"] == 1
    assert r.rejected == ["linear+bias: add at add (line 3): bias float[1, 6] is not 1-D"]
    assert_same_outputs(g, r.graph)


def test_transposes_cancel_and_compose(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 4]) {
            y = transpose(transpose(x)) * 2.0
            z = transpose(transpose(x, [1, 0, 2]), [0, 2, 1])
            return y = y, z = z
        }
    """)
    c = op_counts(r.graph)
    assert c["transpose"] == 1
    (t,) = [n for n in r.graph.nodes() if n.op == "transpose"]
    assert list(t.attrs["perm"]) == [1, 2, 0]
    assert_same_outputs(g, r.graph)


def test_constants_fold_identities_vanish(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[T, 3]) {
            c = neg([-1.0, -2.0, -3.0]) * 2.0 + square([0.5, 0.5, 0.5])
            return (x + 0.0) * 1.0 / 1.0 + c
        }
    """)
    c = op_counts(r.graph)
    assert (c["add"], c["mul"], c["div"], c["const"]) == (1, 0, 0, 1)
    (k,) = [n for n in r.graph.nodes() if n.op == "const"]
    np.testing.assert_array_equal(k.attrs["value"], np.array([2.25, 4.25, 6.25], np.float32))
    assert_same_outputs(g, r.graph)


def test_common_subexpressions_merge_and_dead_code_goes(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[T, 3]) {
            a = exp(x) + 1.0
            b = exp(x) + 1.0
            unused = tanh(x)
            return a * b
        }
    """)
    c = op_counts(r.graph)
    assert (c["exp"], c["add"], c["tanh"]) == (1, 1, 0)
    assert r.stats["cse"] >= 2
    assert_same_outputs(g, r.graph)


def test_transpose_folds_into_matmul(arch_file):
    # a computed right operand: matmul reads it transposed, no transpose node is left;
    # a weight: linear on W^T, which is parameter-derived (arranged once at load)
    g, r = _run(arch_file, """
        model m(a: float[B, T, 4], b: float[B, S, 4]) {
            param W: float[6, 4]
            s = a @ transpose(b)
            y = a @ transpose(W, [1, 0])
            return s = s, y = y, z = matmul(a, W, transpose_b=true)
        }
    """)
    c = op_counts(r.graph)
    assert r.stats["transpose->matmul"] == 1 and c["matmul"] == 1 and c["linear"] == 2
    (mm,) = [n for n in r.graph.nodes() if n.op == "matmul"]
    assert mm.attrs["transpose_b"] is True and mm.shape[-2:] == g.node(g.outputs["s"]).shape[-2:]
    assert [r.graph.node(x).op for x in r.graph.args(mm.id)] == ["input", "input"]
    from archc.compiler.ir import param_derived
    derived = param_derived(r.graph)
    ts = [n.id for n in r.graph.nodes() if n.op == "transpose"]
    assert len(ts) == 2 and set(ts) <= derived       # W^T for y and for z
    assert_same_outputs(g, r.graph)


def test_transpose_of_other_axes_is_not_folded(arch_file):
    g, r = _run(arch_file, """
        model m(a: float[2, 3, 4], b: float[3, 2, 4]) {
            return a @ transpose(b, [1, 2, 0])
        }
    """)
    assert op_counts(r.graph)["transpose"] == 1 and "transpose->matmul" not in r.stats
    assert_same_outputs(g, r.graph)
