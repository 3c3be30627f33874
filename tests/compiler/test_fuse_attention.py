"""fuse_attention: Q/K/V (or K/V for cross-attention) projections merge into one linear on
concatenated weights; RoPE moves inside the attention op; reused projections stay."""
from __future__ import annotations

from archc.compiler.passes.fuse_attention import fuse_attention
from archc.compiler.passes.simplify import simplify
from archc.compiler.verify import verify
from archc.dsl.lower import lower

from .conftest import assert_same_outputs, op_counts


def _run(arch_file, src):
    g = lower(arch_file(src))
    r = fuse_attention(simplify(g).graph)
    verify(r.graph, "fuse_attention")
    return g, r


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
