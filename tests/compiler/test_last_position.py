"""last_position: the position-wise ops before an output run on the last position only
(equal to the full output's last row); the tail stops at values something else reads, at
weights broadcast along the positions and at ops that mix positions; weights untouched."""
from __future__ import annotations

import numpy as np

from archc.compiler.passes.last_position import last_position
from archc.compiler.pipeline import run_pipeline
from archc.compiler.verify import verify
from archc.dsl.dims import Dim
from archc.dsl.lower import lower
from archc.runtime.reference import run_reference

from .conftest import op_counts, random_inputs, random_params

LM = """
model m(ids: int[B, T]) {
    param wte: float[32, 16] = normal(0.5)
    x = embedding(ids, wte)
    repeat 2 as layers {
        x = x + Attention(LayerNorm(x), 4, causal=true) as attn
        x = x + FFN(LayerNorm(x), 32) as mlp
    }
    logits = LayerNorm(x) as ln_f @ transpose(wte)
    return logits
}
"""


def _check(g0, r, output="logits"):
    """The rewritten graph verifies, and its `output` is the last row of the original's."""
    verify(r.graph, "last_position")
    inputs = random_inputs(g0, sizes={"B": 2, "T": 6})
    if "ids" in inputs:
        inputs["ids"] = np.random.default_rng(1).integers(0, 32, inputs["ids"].shape)
    params = random_params(g0)
    full = run_reference(g0, inputs, params)
    last = run_reference(r.graph, inputs, params)
    np.testing.assert_allclose(last[output], full[output][:, -1:], atol=1e-5, rtol=0)
    for k in full.keys() - {output}:
        np.testing.assert_array_equal(last[k], full[k])


def test_lm_tail_after_the_last_attention(arch_file):
    # optimised: the last attention's output projection, the last residual+norm, the last
    # FFN, the final norm and the head see one position
    g0 = lower(arch_file(LM))
    g = run_pipeline(g0, skip=("plan_kv_cache", "plan_memory")).graph
    r = last_position(g, "logits")
    assert r.changed and r.stats["sliced"] == 2
    out = r.graph.node(r.graph.outputs["logits"])
    assert out.shape == (Dim.sym("B"), 1, 32)
    slices = [n for n in r.graph.nodes() if n.op == "slice"]
    assert all(n.attrs == {"axis": 1, "start": -1} for n in slices)
    assert all(n.shape[1] == 1 for n in r.graph.nodes()
               if n.scope.startswith(("layers.1.mlp", "ln_f")) and n.shape is not None
               and n.op not in ("param", "const"))
    # attention itself, and everything before it, still sees every position
    attn = [n for n in r.graph.nodes() if n.op in ("attention", "rope_attention")]
    assert attn and all(n.shape[1] == Dim.sym("T") for n in attn)
    # weights and their layouts (the fused QKV concatenation) are the same nodes
    for n in g.nodes():
        if n.op in ("param", "const", "concat", "transpose"):
            assert r.graph.node(n.id) == n
    _check(g, r)
    _check(g0, last_position(g0, "logits"))          # unoptimised: plain ops


def test_values_read_elsewhere_keep_every_position(arch_file):
    # `hidden` is an output too: the head alone is cut down, hidden stays whole
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            h = RMSNorm(Linear(x, 8) as f) as norm
            return hidden = h, logits = Linear(h, 5) as head
        }
    """))
    r = last_position(g, "logits")
    assert r.stats == {"tail": 1, "sliced": 1}
    assert r.graph.node(r.graph.outputs["hidden"]).shape[1] == Dim.sym("T")
    _check(g, r)


def test_values_broadcast_along_the_positions_stop_the_tail(arch_file):
    # pos (T, 8) broadcasts over the batch: its add sees every position; `* scale` (a
    # weight over the channels) and gelu see one
    g = lower(arch_file("""
        model m(x: float[B, T, 8], pos: float[T, 8]) {
            param scale: float[8] = ones
            y = Linear(x, 8) as f
            return out = gelu((y + pos) * scale)
        }
    """))
    r = last_position(g, "out")
    assert r.stats == {"tail": 2, "sliced": 1}
    assert r.graph.node(next(n.id for n in r.graph.nodes() if n.op == "add")).shape[1] == \
        Dim.sym("T")
    _check(g, r, "out")
    # a weight shaped (1, 1, 8) could broadcast along the positions: not cut through
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            param bias: float[1, 1, 8] = zeros
            return out = gelu(Linear(x, 8) as f + bias)
        }
    """))
    r = last_position(g, "out")
    assert r.stats == {"tail": 1, "sliced": 1} and op_counts(r.graph)["slice"] == 1
    _check(g, r, "out")


def test_nothing_position_wise_is_unchanged(arch_file):
    g = lower(arch_file("""
        model m(q: float[B, T, 8], k: float[B, T, 8], v: float[B, T, 8]) {
            return out = attention(q, k, v, heads=2, causal=true)
        }
    """))
    r = last_position(g, "out")
    assert not r.changed and r.notes == ["out is not computed position by position"]


def test_a_concrete_axis_is_not_a_length(arch_file):
    # a pooled (B, 8) output: axis 1 is a width, not positions
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            return pooled = Linear(take(x, 0, axis=1), 8) as pool
        }
    """))
    r = last_position(g, "pooled")
    assert not r.changed and r.notes == ["pooled's axis 1 is not a length"]
