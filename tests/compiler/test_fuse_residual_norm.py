"""fuse_residual_norm: fires on pre- and post-norm residuals (LayerNorm with and without
bias, RMSNorm), and refuses broadcasting adds and operands still needed after the add."""
from __future__ import annotations

from archc.compiler.passes.fuse_residual_norm import fuse_residual_norm
from archc.compiler.passes.simplify import simplify

from .conftest import assert_same_outputs, lower_and_run, op_counts


def _run(arch_file, src):
    return lower_and_run(arch_file(src), simplify, fuse_residual_norm)


def test_post_norm_stack_fuses_layernorm_and_rmsnorm(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 8]) {
            repeat 3 as layers {
                x = LayerNorm(x + Linear(x, 8) as f) as ln
                x = RMSNorm(x + Linear(x, 8) as g) as rms
                x = LayerNorm(x + Linear(x, 8) as h, bias=false) as ln_nb
            }
            return x
        }
    """)
    c = op_counts(r.graph)
    assert (c["add_layernorm"], c["add_rmsnorm"], c["layernorm"], c["rmsnorm"], c["add"]) == \
        (6, 3, 0, 0, 0)
    assert r.coverage == {"residual+norm": (9, 9)} and r.stats["residual+layernorm"] == 6
    assert_same_outputs(g, r.graph)


def test_sum_still_read_unnormalised_takes_part_0(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 8], r: float[B, T, 8]) {
            s = x + r
            return y = LayerNorm(s) as ln, s = s
        }
    """)
    fused = [n for n in r.graph.nodes() if n.op == "add_layernorm"]
    assert len(fused) == 1
    out_s = r.graph.node(r.graph.outputs["s"])
    assert out_s.op == "getitem" and out_s.attrs["index"] == 0
    assert_same_outputs(g, r.graph)


def test_broadcasting_add_is_rejected(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 8], pos: float[T, 8]) {
            return LayerNorm(x + pos) as ln
        }
    """)
    assert op_counts(r.graph)["add_layernorm"] == 0
    assert r.coverage == {"residual+norm": (0, 1)}
    assert r.rejected == ["residual+layernorm: add at add (line 2): shapes don't match "
                          "(float[B, T, 8] + float[T, 8] broadcasts)"]
    assert_same_outputs(g, r.graph)


def test_operands_used_after_the_add_are_rejected(arch_file):
    # both x and y are read again after the add: the fused kernel could overwrite neither
    g, r = _run(arch_file, """
        model m(x: float[B, T, 8], y: float[B, T, 8]) {
            layer blk {
                s = LayerNorm(x + y) as ln
                z = s * x + Linear(y, 8) as mlp
            }
            return z
        }
    """)
    assert op_counts(r.graph)["add_layernorm"] == 0
    (why,) = r.rejected
    assert why.startswith("residual+layernorm: add at blk (line 3): both operands are used "
                          "again after it (by blk (line 4) and blk.mlp (line 4))")
    assert_same_outputs(g, r.graph)


def test_operand_order_puts_the_dying_operand_first(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 8], y: float[B, T, 8]) {
            s = LayerNorm(x + y) as ln
            return s * x
        }
    """)
    (fused,) = [n for n in r.graph.nodes() if n.op == "add_layernorm"]
    assert r.graph.args(fused.id)[:2] == ["y", "x"]      # x lives on, so y's buffer is reused
    assert_same_outputs(g, r.graph)
