"""Shape inference and errors of attention, rope, positions, alibi, dropout and the
Attention / FFN / GLU layers."""
from __future__ import annotations

import pytest

from archc.dsl.dims import Dim
from archc.dsl.errors import ArchError
from archc.dsl.lower import lower
from archc.dsl.ops import TT, ShapeError, count_flops, infer

B, T, S = Dim.sym("B"), Dim.sym("T"), Dim.sym("S")


def f(shape):
    return TT(tuple(shape), "float32")


def test_attention_shapes_and_flops():
    out = infer("attention", [f((B, T, 16)), f((B, S, 8)), f((B, S, 8))],
                {"heads": 4, "kv_heads": 2})
    assert out == f((B, T, 16))
    fl = count_flops("attention", out, [f((B, T, 16)), f((B, S, 8)), f((B, S, 8))],
                     {"heads": 4, "kv_heads": 2})
    assert str(fl) == "84*B*S*T"      # 4*T*S*H*D + 5*H*T*S with H*D = 16, H = 4


@pytest.mark.parametrize("types,attrs,msg", [
    ([(B, T, 16), (B, S, 16), (B, S, 16)], {"heads": 3}, "not divisible into heads=3"),
    ([(B, T, 16), (B, S, 8), (B, S, 8)], {"heads": 4}, "should have kv_heads*D = 4*4 = 16"),
    ([(B, T, 16), (B, S, 8), (B, S, 8)], {"heads": 4, "kv_heads": 3}, "not a multiple"),
    ([(B, T, 16), (B, S, 16), (B, S, 12)], {"heads": 4}, "must have the shape of k"),
    ([(B, T, 16), (B, S, 16), (B, S, 16)], {"heads": 4, "window": 0}, "window"),
])
def test_attention_errors_name_both_shapes(types, attrs, msg):
    with pytest.raises(ShapeError, match=msg.replace("*", r"\*")):
        infer("attention", [f(t) for t in types], attrs)


def test_attention_mask_and_bias_checked():
    q = f((B, T, 8))
    with pytest.raises(ShapeError, match=r"mask must be bool or int of shape \[B, S\]"):
        infer("attention", [q, f((B, S, 8)), f((B, S, 8)), TT((B, T), "int64")], {"heads": 2})
    with pytest.raises(ShapeError, match=r"does not broadcast to the scores \[B, 2, T, S\]"):
        infer("attention", [q, f((B, S, 8)), f((B, S, 8)), TT((B, S), "bool"),
                            f((1, 3, 1, S))], {"heads": 2})
    ok = infer("attention", [q, f((B, S, 8)), f((B, S, 8)), TT((B, S), "bool"), f((1, 2, 1, S))],
               {"heads": 2})
    assert ok == q


def test_rope_positions_alibi_dropout_shapes():
    x = f((B, T, 16))
    assert infer("rope", [x], {"heads": 4, "rotary_dim": 2}) == x
    with pytest.raises(ShapeError, match="rotary_dim must be a positive even number <= head_dim 4"):
        infer("rope", [x], {"heads": 4, "rotary_dim": 6})
    with pytest.raises(ShapeError, match=r"positions must be int of shape \[B, T\]"):
        infer("rope", [x, TT((T,), "int64")], {"heads": 4})
    assert infer("positions", [TT((B, T), "int64")], {}) == TT((T,), "int64")
    assert infer("sinusoidal_positions", [TT((T,), "int64")], {"dim": 6}) == f((T, 6))
    assert infer("alibi", [x], {"heads": 4}) == f((1, 4, 1, T))
    with pytest.raises(ShapeError, match=r"rate must be a number in \[0, 1\)"):
        infer("dropout", [x], {"rate": 1.0})


def write(tmp_path, body, config="d = 16"):
    p = tmp_path / "m.arch"
    p.write_text(f"config {{ {config} }}\nmodel m(ids: int[B, T]) {{\n"
                 f"    x = Embedding(ids, 10, d) as wte\n{body}\n}}\n")
    return p


def test_attention_layer_graph(tmp_path):
    p = write(tmp_path, "    y = Attention(x, 4, kv_heads=2, causal=true, rope=true, "
                        "dropout=0.1) as attn\n    return y")
    g = lower(p)
    params = {n.attrs["name"]: n.shape for n in g.params()}
    assert params["attn.q.weight"] == (16, 16) and params["attn.k.weight"] == (16, 8)
    assert params["attn.o.bias"] == (16,)
    ops = [n.op for n in g.nodes() if n.scope.startswith("attn")]
    assert ops.count("rope") == 2 and ops.count("linear") == 4 and "dropout" in ops
    (a,) = [n for n in g.nodes() if n.op == "attention"]
    assert (a.attrs["heads"], a.attrs["kv_heads"], a.attrs["causal"], a.attrs["cache"]) == \
        (4, 2, True, True)


def test_layer_index_recorded_in_repeat(tmp_path):
    p = write(tmp_path, "    repeat 2 as layers {\n        x = Attention(x, 2) as attn\n    }\n"
                        "    return x")
    layers = [n.attrs["layer"] for n in lower(p).nodes() if n.op == "attention"]
    assert layers == [0, 1]


def test_glu_and_ffn_layers(tmp_path):
    p = write(tmp_path, "    y = GLU(x, 24, act=\"silu\") as mlp + FFN(x, 32, act=\"relu\") as ffn"
                        "\n    return y")
    g = lower(p)
    names = {n.attrs["name"] for n in g.params()}
    assert {"mlp.gate.weight", "mlp.up.weight", "mlp.down.weight"} <= names
    assert "mlp.up.bias" not in names and "ffn.up.bias" in names
    assert [n.op for n in g.nodes() if n.scope.startswith("mlp") and n.op != "param"] == \
        ["linear", "silu", "linear", "mul", "linear"]


def test_layer_errors_point_at_the_call(tmp_path):
    p = write(tmp_path, "    y = Attention(x, 5) as attn\n    return y")
    with pytest.raises(ArchError, match="d_model 16 does not divide into 5 heads") as e:
        lower(p)
    assert e.value.span.line == 4
    p = write(tmp_path, "    y = FFN(x, 8, act=\"gleu\")\n    return y")
    with pytest.raises(ArchError, match="unknown activation") as e:
        lower(p)
    assert e.value.hint == "did you mean `gelu`?"
