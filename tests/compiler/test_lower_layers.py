"""lower_layers: `attention` written out as primitive ops (same outputs, same scope and
span); ops with no primitive form stay whole and are listed."""
from __future__ import annotations

import numpy as np

from archc.compiler.passes.lower_layers import META_KEY, lower_layers
from archc.compiler.pipeline import explain_text, run_pipeline, stats_text
from archc.dsl.lower import lower

from .conftest import assert_same_outputs, lower_and_run, op_counts, random_inputs, random_params


def _lower(arch_file, src):
    return lower_and_run(arch_file(src), lower_layers)


def test_causal_mha_becomes_primitives_in_its_scope(arch_file):
    g, r = _lower(arch_file, """
        model m(x: float[B, T, 16]) {
            return Attention(x, 4, causal=true) as attn
        }
    """)
    c = op_counts(r.graph)
    assert c["attention"] == 0 and r.stats == {"attention": 1} and r.changed
    # q/k/v head splits, q k^T and p v, the k transpose and the merge, one scale
    assert (c["softmax"], c["matmul"], c["attention_mask"], c["padding_mask"]) == (1, 2, 1, 0)
    assert (c["reshape"], c["transpose"], c["mul"], c["stack"]) == (4, 5, 1, 0)
    (mask,) = [n for n in r.graph.nodes() if n.op == "attention_mask"]
    assert dict(mask.attrs) == {"causal": True, "window": None}
    (scale,) = [n for n in r.graph.nodes() if n.op == "const"]
    assert np.isclose(float(scale.attrs["value"]), 1 / np.sqrt(4))      # D = 16 / 4
    attn = next(n for n in g.nodes() if n.op == "attention")
    new = [n for n in r.graph.nodes() if n.id not in g]
    assert new and all(n.scope == "attn" and n.span == attn.span for n in new)
    (out_id,) = r.graph.meta[META_KEY]
    assert r.graph.meta[META_KEY][out_id] == {"cache": True, "layer": None}
    assert r.graph.node(out_id).op == "reshape"
    assert r.graph.args(r.graph.outputs["out"])[0] == out_id       # o-projection reads it
    assert META_KEY not in g.meta                                       # the input is untouched
    assert_same_outputs(g, r.graph)


def test_gqa_repeats_kv_heads_and_matches(arch_file):
    g, r = _lower(arch_file, """
        model m(x: float[B, T, 16]) {
            return Attention(x, 4, kv_heads=2, causal=true, window=3, bias=false) as attn
        }
    """)
    c = op_counts(r.graph)
    assert c["stack"] == 2 and c["attention"] == 0
    (st,) = {len(r.graph.args(n.id)) for n in r.graph.nodes() if n.op == "stack"}
    assert st == 2                                                      # 4 / 2 heads
    inputs = random_inputs(g, sizes={"T": 7})
    assert_same_outputs(g, r.graph, inputs)


def test_gqa_too_wide_for_the_node_bound_stays_whole(arch_file, monkeypatch):
    # PaLM with n_head=65536 over one K/V head: 2 x 65536 stack arguments a layer, decided
    # before any is written
    import archc.compiler.passes.lower_layers as ll
    src = """
        model m(x: float[B, T, 64]) {
            a = Attention(x, 16, kv_heads=1, causal=true) as attn
            return Attention(a, 4, causal=true) as plain
        }
    """
    g, r = _lower(arch_file, src)
    assert op_counts(r.graph)["attention"] == 0
    monkeypatch.setattr(ll, "MAX_NODES", len(g) + g.nx.number_of_edges() + 2 * 16 - 1)
    g, r = _lower(arch_file, src)
    assert op_counts(r.graph)["attention"] == 1 and r.stats["attention"] == 1
    assert r.rejected == ["attention at attn (line 2): kept whole, writing out its 16 heads "
                          "over 1 K/V heads (with the graph's other grouped attentions) would "
                          f"pass {ll.MAX_NODES:,} nodes and edges"]
    assert_same_outputs(g, r.graph)


def test_padding_mask_bias_and_a_fully_masked_row(arch_file):
    g, r = _lower(arch_file, """
        model m(x: float[B, T, 8], mask: int[B, T], b: float[1, 2, T, T]) {
            return Attention(x, 2, mask=mask, score_bias=b, scale=0.5) as attn
        }
    """)
    c = op_counts(r.graph)
    assert (c["padding_mask"], c["attention_mask"], c["add"]) == (1, 0, 2)
    (scale,) = [n for n in r.graph.nodes() if n.op == "const"]
    assert float(scale.attrs["value"]) == 0.5
    inputs = random_inputs(g)
    inputs["mask"][1] = 0                      # batch 1 sees no key: zeros, not NaN
    params = random_params(g)
    assert_same_outputs(g, r.graph, inputs, params)
    from archc.runtime.reference import run_reference
    out = run_reference(r.graph, inputs, params)["out"]
    assert np.isfinite(out).all()


def test_scale_one_emits_no_multiply(arch_file):
    _, r = _lower(arch_file, """
        model m(x: float[B, T, 8]) {
            return Attention(x, 2, scale=1.0) as attn
        }
    """)
    assert op_counts(r.graph)["mul"] == 0


def test_ops_without_a_primitive_form_are_kept_and_listed(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            repeat 2 as layers {
                x = x + MoE(x, 4, 16, top_k=2) as moe
            }
            return x
        }
    """))
    res = run_pipeline(g, only=["lower_layers"], verify=True)
    step = res.result("lower_layers")
    assert op_counts(step.graph)["moe"] == 2 and not step.changed
    assert step.stats == {"kept moe": 2}
    assert step.rejected == ["moe at layers.0.moe (line 3): no primitive decomposition",
                             "moe at layers.1.moe (line 3): no primitive decomposition"]
    assert "lower_layers: 2 candidates not lowered\n  moe at layers.0.moe (line 3)" \
        in explain_text(res)
    assert "kept moe x2" in stats_text(res)
