"""fuse_attention: Q/K/V (or K/V for cross-attention) projections merge into one linear on
concatenated weights; RoPE moves inside the attention op; reused projections stay."""
from __future__ import annotations

from archc.compiler.passes.fuse_attention import fuse_attention
from archc.compiler.passes.simplify import simplify
from archc.compiler.pipeline import run_pipeline, stats_text
from archc.dsl.lower import lower

from .conftest import assert_same_outputs, lower_and_run, op_counts, random_inputs, random_params


def _run(arch_file, src):
    return lower_and_run(arch_file(src), simplify, fuse_attention)


def test_gqa_qkv_merge_with_rope(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 16]) {
            return Attention(x, 4, kv_heads=2, causal=true, bias=false, rope=true) as attn
        }
    """)
    c = op_counts(r.graph)
    assert (c["rope_attention"], c["attention"], c["rope"], c["split"], c["concat"]) == \
        (1, 0, 0, 1, 1)
    (split,) = [n for n in r.graph.nodes() if n.op == "split"]
    assert list(split.attrs["sections"]) == [16, 8, 8]          # H*D, Hkv*D, Hkv*D
    w = r.graph.node("attn.qkv_weight")
    assert w.shape == (16, 32) and [r.graph.node(a).attrs["name"] for a in r.graph.args(w.id)] \
        == ["attn.q.weight", "attn.k.weight", "attn.v.weight"]
    assert r.stats == {"qkv": 1, "rope": 1}
    assert r.coverage == {"attention": (1, 1), "QKV projections": (1, 1)}
    assert_same_outputs(g, r.graph)


def test_mha_with_biases_and_mask(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 8], mask: int[B, T]) {
            return Attention(x, 2, mask=mask) as attn
        }
    """)
    c = op_counts(r.graph)
    assert (c["attention"], c["concat"], c["linear"]) == (1, 2, 2)   # qkv + output proj
    assert_same_outputs(g, r.graph)


def test_cross_attention_merges_k_and_v_only(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 8], enc: float[B, S, 8]) {
            return Attention(x, 2, kv=enc) as cross
        }
    """)
    (split,) = [n for n in r.graph.nodes() if n.op == "split"]
    assert list(split.attrs["sections"]) == [8, 8]
    assert r.graph.node(r.graph.args(split.id)[0]).id == "cross.kv"
    assert op_counts(r.graph)["linear"] == 3                           # q, kv, o
    assert_same_outputs(g, r.graph)


def test_projection_read_elsewhere_is_rejected(arch_file):
    g, r = _run(arch_file, """
        model m(x: float[B, T, 8]) {
            q = Linear(x, 8) as q
            k = Linear(x, 8) as k
            v = Linear(x, 8) as v
            a = attention(q, k, v, heads=2)
            return a + q
        }
    """)
    assert op_counts(r.graph)["split"] == 0
    assert r.coverage == {"attention": (1, 1), "QKV projections": (0, 1)}
    assert "projection q (line 2) has a second consumer" in r.rejected[0]
    assert_same_outputs(g, r.graph)


# ---- attention written out in .arch fuses like the library Attention ---------------------

HAND = """
block SelfAttention(x: float[B, T, C], heads: int) {
    D = C / heads
    q = Linear(x, C) as q
    k = Linear(x, C) as k
    v = Linear(x, C) as v
    qh = transpose(reshape(q, [B, T, heads, D]), [0, 2, 1, 3])     # (B, H, T, D)
    kh = transpose(reshape(k, [B, T, heads, D]), [0, 2, 1, 3])
    vh = transpose(reshape(v, [B, T, heads, D]), [0, 2, 1, 3])
    p = softmax(qh @ transpose(kh) / sqrt(D) + attention_mask(qh, kh, causal=true))
    a = reshape(transpose(p @ vh, [0, 2, 1, 3]), [B, T, C])         # (B, T, C)
    return Linear(a, C) as o
}
"""
GPT = """
config {
    n_layer = 12
    d = 16
}
model gpt(x: float[B, T, d]) {
    repeat n_layer as layers {
        x = x + ATTN
    }
    return x
}
"""


def _signature(g):
    """What the optimised graph computes, without source positions."""
    def attrs(n):
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in n.attrs.items()}
    return [(n.id, n.op, attrs(n), n.shape, g.args(n.id)) for n in g.nodes()]


def test_hand_written_attention_fuses_like_the_library(arch_file):
    lib = lower(arch_file(GPT.replace("ATTN", "Attention(x, 2, causal=true) as attn"),
                          "lib.arch"))
    hand = lower(arch_file(HAND + GPT.replace("ATTN", "SelfAttention(x, 2) as attn"),
                           "hand.arch"))
    assert op_counts(hand)["softmax"] == 12 and op_counts(hand)["attention"] == 0
    r_lib, r_hand = run_pipeline(lib, verify=True), run_pipeline(hand, verify=True)
    assert _signature(r_hand.graph) == _signature(r_lib.graph)
    (a,) = [n for n in r_hand.graph.nodes() if n.op == "attention" and n.scope == "layers.7.attn"]
    assert dict(a.attrs) == {"heads": 2, "kv_heads": 2, "causal": True, "window": None,
                             "scale": None, "cache": True, "layer": 7}
    for res in (r_lib, r_hand):
        assert res.coverage()["attention"] == (12, 12)
        assert "12/12 attention fused, 12/12 QKV projections fused" in stats_text(res)
    params = random_params(lib)
    inputs = random_inputs(lib, sizes={"T": 6})
    assert_same_outputs(lib, r_hand.graph, inputs, params)
    assert_same_outputs(hand, r_hand.graph, inputs, params)


def _pipeline(arch_file, src):
    g = lower(arch_file(src))
    return g, run_pipeline(g, verify=True)


def test_one_head_mqa_broadcast_and_rope_fuse(arch_file):
    # (B, T, C) tensors never split into heads: one head; k/v with one head broadcast over
    # the query heads: multi-query; rope before the split: rope_attention
    g, res = _pipeline(arch_file, """
        model m(q: float[B, T, 8], k: float[B, S, 8], v: float[B, S, 8]) {
            return softmax(q @ transpose(k) * 0.5) @ v
        }
    """)
    (a,) = [n for n in res.graph.nodes() if n.op == "attention"]
    assert (a.attrs["heads"], a.attrs["scale"], a.attrs["causal"]) == (1, 0.5, False)
    assert op_counts(res.graph)["softmax"] == 0
    assert_same_outputs(g, res.graph, random_inputs(g, sizes={"T": 3, "S": 5}))

    g, res = _pipeline(arch_file, """
        model m(x: float[B, T, 16]) {
            q = rope(Linear(x, 16, bias=false) as q, heads=4, head_dim=4)
            k = rope(Linear(x, 4, bias=false) as k, heads=1, head_dim=4)
            v = Linear(x, 4, bias=false) as v
            qh = transpose(reshape(q, [B, T, 4, 4]), [0, 2, 1, 3])
            kh = transpose(reshape(k, [B, T, 1, 4]), [0, 2, 1, 3])      # one K/V head
            vh = transpose(reshape(v, [B, T, 1, 4]), [0, 2, 1, 3])
            s = qh @ transpose(kh) * 0.5 + attention_mask(q, k, causal=true, window=2)
            return reshape(transpose(softmax(s) @ vh, [0, 2, 1, 3]), [B, T, 16])
        }
    """)
    (a,) = [n for n in res.graph.nodes() if n.op == "rope_attention"]
    assert (a.attrs["heads"], a.attrs["kv_heads"], a.attrs["window"], a.attrs["scale"]) == \
        (4, 1, 2, None)                                 # 0.5 = 1/sqrt(4): the default
    assert res.coverage()["attention"] == (1, 1) and op_counts(res.graph)["rope"] == 0
    assert_same_outputs(g, res.graph, random_inputs(g, sizes={"T": 6}))


def test_written_out_rejections_are_explained(arch_file):
    g, res = _pipeline(arch_file, """
        model m(q: float[B, T, 8], k: float[B, T, 8], v: float[B, T, 8], t: float[B, T, T],
                k2: float[B, T, 8], k3: float[B, T, 8]) {
            p = softmax(q @ transpose(k) * 0.5)
            o1 = p @ v
            o2 = softmax(q @ transpose(k2) * t) @ v
            o3 = softmax(q @ transpose(k3) + t) @ v
            return o1 = o1, probs = p, o2 = o2, o3 = o3
        }
    """)
    why = res.result("fuse_attention").rejected
    assert "sdpa: softmax at softmax (line 3) has a second consumer a graph output" in why
    assert "sdpa: attention at softmax_1 (line 5): scale is not a constant scalar " \
           "(input float[B, T, T] at t (line 1))" in why
    assert "sdpa: attention at softmax_2 (line 6): a score bias without a padding mask has " \
           "no attention-op form (the op's bias follows its mask)" in why
    assert res.coverage()["attention"] == (0, 3)
    assert op_counts(res.graph)["softmax"] == 3
    assert_same_outputs(g, res.graph)


def test_padding_mask_and_bias_fuse_into_the_mask_and_bias_slots(arch_file):
    g, res = _pipeline(arch_file, """
        model m(x: float[B, T, 8], mask: int[B, T], b: float[1, 2, T, T]) {
            return Attention(x, 2, mask=mask, score_bias=b) as attn
        }
    """)
    (a,) = [n for n in res.graph.nodes() if n.op == "attention"]
    assert [res.graph.node(x).op for x in res.graph.args(a.id)[3:]] == ["input", "input"]
    assert res.result("lower_layers").stats == {"attention": 1}
    inputs = random_inputs(g)
    inputs["mask"][0] = 0
    assert_same_outputs(g, res.graph, inputs)


def test_cache_false_survives_lowering_and_fusion(arch_file):
    g, res = _pipeline(arch_file, """
        model m(x: float[B, T, 8]) {
            return Attention(x, 2, causal=true, cache=false) as attn
        }
    """)
    (a,) = [n for n in res.graph.nodes() if n.op == "attention"]
    assert a.attrs["cache"] is False and res.graph.meta.get("kv_plan") is None
