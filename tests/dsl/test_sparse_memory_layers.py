"""Shape inference and user errors for the MoE, T5 bias, Longformer, RETRO and memory ops
and layers."""
from __future__ import annotations

import pytest

from archc.dsl.dims import Dim
from archc.dsl.errors import ArchError
from archc.dsl.lower import lower

B, T, S, C, K, R = (Dim.sym(n) for n in "BTSCKR")


def error(arch_file, body: str, inputs: str = "x: float[B, T, 8]") -> str:
    with pytest.raises(ArchError) as e:
        lower(arch_file(f"model m({inputs}) {{\n{body}\n}}\n"))
    return e.value.render()


def out_shape(arch_file, body: str, inputs: str = "x: float[B, T, 8]"):
    g = lower(arch_file(f"model m({inputs}) {{\n{body}\n}}\n"))
    return g, g.node(g.outputs["out"]).shape


# ---- shapes ------------------------------------------------------------------------------

def test_moe_layer_shapes_and_params(arch_file):
    g, shape = out_shape(arch_file, "    return MoE(x, 4, 16, top_k=2, act=\"silu\", gated=true)")
    assert shape == (B, T, 8)
    names = {n.attrs["name"]: n.shape for n in g.params()}
    assert names["moe.router.weight"] == (8, 4)
    assert names["moe.experts.3.gate.weight"] == (8, 16)
    assert names["moe.experts.0.down.weight"] == (16, 8)
    node = next(n for n in g.nodes() if n.op == "moe")
    assert node.attrs["normalize"] is True and node.attrs["top_k"] == 2
    assert [g.node(a).shape for a in g.args(node.id)][2:] == [(4, 8, 16), (4, 16, 8), (4, 8, 16)]


def test_moe_sparse_step_alternates_dense_and_sparse(arch_file):
    g, _ = out_shape(arch_file, """
    repeat 4 as layers { x = MoE(x, 2, 16, sparse_step=2) as mlp }
    return out = x""")
    routed = sorted(n.scope for n in g.nodes() if n.op == "moe")
    assert routed == ["layers.1.mlp", "layers.3.mlp"]
    assert any(n.attrs["name"] == "layers.0.mlp.dense.up.weight" for n in g.params())


def test_relative_position_bias_shape(arch_file):
    g, shape = out_shape(arch_file, "    return RelativePositionBias(x, y, 4, buckets=8)",
                         "x: float[B, T, 8], y: float[B, S, 8]")
    assert shape == (1, 4, T, S)


def test_longformer_retro_and_memory_shapes(arch_file):
    _, shape = out_shape(arch_file, "    return LongformerAttention(x, 2, 4, g, mask=g)",
                         "x: float[B, T, 8], g: int[B, T]")
    assert shape == (B, T, 8)
    _, shape = out_shape(arch_file, "    return ChunkedCrossAttention(x, n, 2, 4)",
                         "x: float[B, T, 8], n: float[B, C, K, R, 6]")
    assert shape == (B, T, 8)
    g, shape = out_shape(arch_file, "    return ProductKeyMemory(x, 5, 3, heads=2, out=6)")
    assert shape == (B, T, 6)
    assert {n.attrs["name"]: n.shape for n in g.params()}["pkm.keys"] == (2, 2, 5, 2)
    g, shape = out_shape(arch_file, "    return Attention(x, 2, causal=true, memory=3, mask=m)",
                         "x: float[B, T, 8], m: int[B, T]")
    assert shape == (B, T, 8)
    k = next(n for n in g.nodes() if n.op == "prepend_memory")
    assert str(k.shape[1]) == "T + 3" and k.shape[2] == 8
    assert str(next(n for n in g.nodes() if n.op == "memory_mask").shape[1]) == "T + 3"


def test_moe_flops_count_only_the_chosen_experts(arch_file):
    from archc.dsl.ops import count_flops, TT
    x = TT((T, 8), "float32")
    args = [x, TT((8, 4), "float32"), TT((4, 8, 16), "float32"), TT((4, 16, 8), "float32")]
    one = count_flops("moe", x, args, {"top_k": 1})
    two = count_flops("moe", x, args, {"top_k": 2})
    # router 2*8*4 per token; each chosen expert 4*8*16
    assert str(one) == f"{2 * 8 * 4 + 4 * 8 * 16}*T"
    assert str(two) == f"{2 * 8 * 4 + 2 * 4 * 8 * 16}*T"


# ---- errors ------------------------------------------------------------------------------

def test_moe_errors(arch_file):
    assert "MoE: top_k=3 is more than the 2 experts" in error(arch_file,
                                                              "    return MoE(x, 2, 16, top_k=3)")
    assert "give `capacity` or `capacity_factor`, not both" in error(
        arch_file, "    return MoE(x, 2, 16, capacity=2, capacity_factor=1.0)")
    text = error(arch_file, "    return MoE(x, 2, 16, act=\"gelu_new\")")
    assert "MoE: unknown activation 'gelu_new'" in text and "hint:" in text
    assert "sparse_step needs the layer inside a `repeat` stack" in error(
        arch_file, "    return MoE(x, 2, 16, sparse_step=2)")


def test_moe_op_shape_errors_are_rendered_at_the_call(arch_file):
    text = error(arch_file, "    return moe(x, r, u, u)",
                 "x: float[T, 8], r: float[8, 2], u: float[2, 8, 16]")
    assert text.splitlines()[0].endswith(
        "error: moe: w_down must be (E, F, C) = (2, 16, 8), got [2, 8, 16]")
    assert "^^^" in text


def test_longformer_window_must_be_even(arch_file):
    text = error(arch_file, "    return LongformerAttention(x, 2, 3, g)",
                 "x: float[B, T, 8], g: int[B, T]")
    assert "window is the total attention window and must be a positive even number" in text
    assert "hint: HF `attention_window`" in text


def test_longformer_global_mask_shape(arch_file):
    text = error(arch_file, "    return LongformerAttention(x, 2, 4, g)",
                 "x: float[B, T, 8], g: int[B, S]")
    assert "global_mask must be bool or int of shape [B, T]" in text


def test_chunked_cross_attention_errors(arch_file):
    assert "neighbours must be encoded (B, chunks, neighbours, tokens, d)" in error(
        arch_file, "    return ChunkedCrossAttention(x, n, 2, 4)",
        "x: float[B, T, 8], n: int[B, C, K, R]")
    assert "must match q [B, T, 8] in batch and features" in error(
        arch_file, "    return chunked_cross_attention(x, k, k, chunk=2)",
        "x: float[B, T, 8], k: float[S, C, R, 8]")


def test_product_key_memory_errors(arch_file):
    assert "dim_key must be even" in error(arch_file,
                                            "    return ProductKeyMemory(x, 4, 2, dim_key=3)")
    assert "topk must be a whole number from 1 to the 4 sub-keys" in error(
        arch_file, "    return ProductKeyMemory(x, 4, 5)")


def test_relative_position_bias_errors(arch_file):
    assert "a bidirectional table needs an even number of buckets" in error(
        arch_file, "    return RelativePositionBias(x, x, 2, buckets=7)")
    assert "max_distance must be a whole number above the 4 exact buckets" in error(
        arch_file, "    return RelativePositionBias(x, x, 2, buckets=16, max_distance=3)")


def test_score_bias_needs_a_mask(arch_file):
    text = error(arch_file, """
    b = RelativePositionBias(x, x, 2)
    return Attention(x, 2, score_bias=b)""")
    assert "`score_bias` must be a tensor, given with `mask`" in text
