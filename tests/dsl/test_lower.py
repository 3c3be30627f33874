"""Lowering: scopes, blocks, repeat, params, includes, and shape inference at build time."""
from __future__ import annotations

import numpy as np
import pytest

from archc.dsl.dims import Dim
from archc.dsl.errors import ArchError
from archc.dsl.lower import lower

T = Dim.sym("T")
B = Dim.sym("B")


def test_config_arithmetic(arch_file):
    g = lower(arch_file("""
        config {
            d = 4
            d_ff = 4 * d
            h = d_ff / 8          # exact int division stays an int
            r = 3 / 2             # inexact gives a float
            e = 1e-5
        }
        model m(x: float[T, d]) { return x }
    """))
    assert g.meta["config"] == {"d": 4, "d_ff": 16, "h": 2, "r": 1.5, "e": 1e-5}


def test_inputs_symbolic_shapes_and_ops(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8], ids: int[B, T]) {
            y = softmax(x @ transpose(x), axis=-1)
            z = reshape(x, [B, T, 2, 4])
            return y, z
        }
    """))
    assert g.node(g.outputs["y"]).shape == (B, T, T)
    assert g.node(g.outputs["z"]).shape == (B, T, 2, 4)
    assert [g.node(n).dtype for n in g.inputs] == ["float32", "int64"]


def test_reshape_infers_minus_one_and_concat_adds_symbols(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            a = reshape(x, [-1, 8])
            b = concat(x, x, axis=1)
            return a, b
        }
    """))
    assert str(g.node(g.outputs["a"]).shape[0]) == "B*T"
    assert str(g.node(g.outputs["b"]).shape[1]) == "2*T"


def test_layer_scopes_and_default_names(arch_file):
    g = lower(arch_file("""
        model m(x: float[T, 4]) {
            a = LayerNorm(x)
            b = LayerNorm(a)
            c = Linear(b, 3) as proj
            layer head { param w: float[3] = ones
                         y = c * w }
            return y
        }
    """))
    names = [p.attrs["name"] for p in g.params()]
    assert names == ["layernorm.weight", "layernorm.bias", "layernorm_1.weight",
                     "layernorm_1.bias", "proj.weight", "proj.bias", "head.w"]
    assert g.node(g.outputs["y"]).scope == "head"


def test_repeat_gives_each_iteration_its_own_params(arch_file):
    g = lower(arch_file("""
        config { n = 3 }
        block Layer(x: float[T, d]) {
            return x + Linear(relu(x), d) as ff
        }
        model m(x: float[T, 4]) {
            repeat n as layers { x = Layer(x) }
            return x
        }
    """))
    assert [p.attrs["name"] for p in g.params()] == [
        f"layers.{i}.ff.{w}" for i in range(3) for w in ("weight", "bias")]
    assert [(r.name, r.count) for r in g.repeats] == [("layers", 3)]
    assert g.param_count() == 3 * (16 + 4)


def test_named_block_call_opens_scope(arch_file):
    g = lower(arch_file("""
        block Mlp(x, d: int) { return Linear(x, d) as fc }
        model m(x: float[T, 4]) {
            a = Mlp(x, 4) as first
            b = Mlp(a, 2) as second
            return b
        }
    """))
    assert [p.attrs["name"] for p in g.params()] == [
        "first.fc.weight", "first.fc.bias", "second.fc.weight", "second.fc.bias"]


def test_block_binds_symbolic_sizes(arch_file):
    g = lower(arch_file("""
        block Heads(x: float[B, T, C], h: int) {
            return reshape(x, [B, T, h, C / h])
        }
        model m(x: float[B, T, 8]) { return Heads(x, 2) }
    """))
    assert g.node(g.outputs["out"]).shape == (B, T, 2, 4)


def test_inline_param_values(arch_file):
    g = lower(arch_file("""
        model m(x: float[T, 2]) {
            param W = [[1.0, 2.0], [3.0, 4.0]]
            param b: float[2] = zeros
            param s: float[2] = normal(0.5)
            return x @ W + b + s
        }
    """))
    w, b, s = g.params()
    np.testing.assert_array_equal(w.attrs["value"], [[1, 2], [3, 4]])
    assert w.dtype == "float32" and w.shape == (2, 2)
    assert (b.attrs["init"], s.attrs["init"], s.attrs["std"]) == ("zeros", "normal", 0.5)


def test_multi_output_split(arch_file):
    g = lower(arch_file("""
        model m(x: float[T, 6]) {
            q, k, v = split(x, 3)
            return q, v
        }
    """))
    assert g.node(g.outputs["q"]).op == "getitem"
    assert g.node(g.outputs["v"]).shape == (T, 2)


def test_index_and_slice(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            first = x[:, 0]
            mid = x[:, :, 2:6]
            last = x[:, -2:]
            return first, mid, last
        }
    """))
    assert g.node(g.outputs["first"]).shape == (B, 8)
    assert g.node(g.outputs["mid"]).shape == (B, T, 4)
    assert g.node(g.outputs["last"]).shape == (B, 2, 8)     # the last 2 of T positions


def test_include_relative_path_and_diamond(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "cfg.arch").write_text("config { d = 4 }\n")
    (tmp_path / "lib" / "a.arch").write_text('include "cfg.arch"\nblock A(x) { return relu(x) }\n')
    (tmp_path / "main.arch").write_text(
        'include "lib/a.arch"\nmodel m(x: float[T, d]) { return A(x) }\n')
    g = lower(tmp_path / "main.arch")
    assert g.node(g.outputs["out"]).op == "relu"
    assert g.meta["config"] == {"d": 4}


def err(arch_file, source: str) -> ArchError:
    with pytest.raises(ArchError) as e:
        lower(arch_file(source))
    return e.value


def test_shape_mismatch_reported_at_its_line(arch_file):
    e = err(arch_file, """
        model m(x: float[T, 4]) {
            param W: float[5, 3]
            y = x @ W
            return y
        }
    """)
    assert (e.span.line, e.span.col) == (3, 9)
    assert "[T, 4] @ [5, 3]" in e.message
    assert any("from" in n and ":2:" in n for n in e.notes)


def test_unknown_names_get_hints(arch_file):
    e = err(arch_file, "model m(x: float[T, 4]) {\n  y = rmsnrom(x)\n  return y\n}")
    assert e.message == "unknown op or block `rmsnrom`" and e.hint == "did you mean `rmsnorm`?"
    e = err(arch_file, "config { d_model = 4 }\nmodel m(x: float[T, d_modle]) { return x }")
    assert e.message == "unknown size `d_modle`" and e.hint.startswith("did you mean `d_model`?")
    e = err(arch_file, "model m(x: float[T, 4]) {\n  y = LayerNorm(x, epsilon=1e-6)\n"
                       "  return y\n}")
    assert e.message == "LayerNorm() has no argument `epsilon`"
    assert e.hint == "did you mean `eps`?"


def test_duplicate_and_structural_errors(arch_file):
    e = err(arch_file, "config { d = 1 }\nconfig { d = 2 }\nmodel m(x: float[T, 4]) { return x }")
    assert "defined twice" in e.message and e.span.line == 2
    e = err(arch_file, """
        model m(x: float[T, 4]) {
            a = Linear(x, 4) as fc
            b = Linear(a, 4) as fc
            return b
        }
    """)
    assert "already used" in e.message and e.span.line == 3
    e = err(arch_file, "block B(x) { return B(x) }\nmodel m(x: float[T, 4]) { return B(x) }")
    assert "calls itself" in e.message
    e = err(arch_file, "config { d = 4 / 0 }\nmodel m(x: float[T, 4]) { return x }")
    assert e.message == "division by zero"
    e = err(arch_file, "model m(x: float[T, 4]) {\n  param W: float[4, -2]\n  return x\n}")
    assert "must not be negative" in e.message


def test_include_cycle_and_missing(tmp_path):
    (tmp_path / "a.arch").write_text('include "b.arch"\n')
    (tmp_path / "b.arch").write_text('include "a.arch"\n')
    with pytest.raises(ArchError) as e:
        lower(tmp_path / "a.arch")
    assert e.value.message == "include cycle: a.arch -> b.arch -> a.arch"
    (tmp_path / "c.arch").write_text('include "nope.arch"\n')
    with pytest.raises(ArchError) as e:
        lower(tmp_path / "c.arch")
    assert "included file not found" in e.value.message and e.value.span.line == 1
