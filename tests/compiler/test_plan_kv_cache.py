"""plan_kv_cache: entries and byte counts equal hand arithmetic (MHA, GQA, MQA, sliding
window ring buffers, cross-attention), S_max from config or --max-seq, budget refusal."""
from __future__ import annotations

import pytest

from archc.cli import main
from archc.compiler.passes.plan_kv_cache import plan_kv_cache
from archc.dsl.errors import ArchError
from archc.dsl.lower import lower

MODEL = """
config {
    n_ctx = 128
}
model m(x: float[B, T, 64], enc: float[B, S, 64]) {
    layer mha { a = Attention(x, 8, causal=true) }                        # H_kv 8, D 8
    layer gqa { b = Attention(a, 8, kv_heads=2, causal=true) }            # H_kv 2
    layer mqa { c = Attention(b, 8, kv_heads=1, causal=true, window=16) } # ring of 16
    layer cross { d = Attention(c, 4, kv=enc) }                           # encoder K/V, D 16
    layer enc_self { e = Attention(d, 4) }                                # not causal: none
    return e
}
"""


def _aligned(n: int) -> int:
    return (n + 63) // 64 * 64


def test_plan_matches_hand_arithmetic(arch_file):
    g = lower(arch_file(MODEL))
    r = plan_kv_cache(g, batch=3, dims={"S": 10})
    kp = r.graph.meta["kv_plan"]
    got = [(e.scope, e.kind, e.kv_heads, e.slots, e.head_dim) for e in kp.entries]
    assert got == [("mha.attn", "self", 8, 128, 8), ("gqa.attn", "self", 2, 128, 8),
                   ("mqa.attn", "window", 1, 16, 8), ("cross.attn", "cross", 4, 10, 16)]
    B, f32, i64 = 3, 4, 8
    kv = [B * 8 * 128 * 8 * f32, B * 2 * 128 * 8 * f32, B * 1 * 16 * 8 * f32,
          B * 4 * 10 * 16 * f32]
    pos = [128 * i64, 128 * i64, 16 * i64, 10 * i64]           # one position per slot
    assert [e.kv_bytes for e in kp.entries] == kv
    assert [e.pos_bytes for e in kp.entries] == pos
    assert kp.total_bytes == sum(2 * _aligned(k) + _aligned(p) for k, p in zip(kv, pos))
    offsets = [e.k_offset for e in kp.entries]
    assert offsets[0] == 0 and offsets[1] == 2 * _aligned(kv[0]) + _aligned(pos[0])
    assert all(e.v_offset == e.k_offset + _aligned(e.kv_bytes) for e in kp.entries)
    # one more token of context: K and V of each full-context self-attention, + a position
    assert kp.bytes_per_token() == (2 * 8 * 8 * f32 + i64) + (2 * 2 * 8 * f32 + i64)
    assert r.graph.meta is not g.meta and "kv_plan" not in g.meta


def test_max_seq_overrides_the_declared_context(arch_file):
    g = lower(arch_file(MODEL))
    kp = plan_kv_cache(g, max_seq=8, dims={"S": 10}).graph.meta["kv_plan"]
    assert (kp.max_seq, kp.max_seq_from) == (8, "--max-seq")
    assert [e.slots for e in kp.entries] == [8, 8, 8, 10]          # window 16 > S_max 8


def test_budget_refusal_says_by_how_much(arch_file):
    g = lower(arch_file(MODEL))
    total = plan_kv_cache(g, dims={"S": 10}).graph.meta["kv_plan"].total_bytes
    with pytest.raises(ArchError) as e:
        plan_kv_cache(g, dims={"S": 10}, max_memory=total - 100)
    assert "over by 100 B" in e.value.message
    assert plan_kv_cache(g, dims={"S": 10}, max_memory=total).graph.meta["kv_plan"]


def test_large_cache_warns(arch_file):
    g = lower(arch_file(MODEL))
    r = plan_kv_cache(g, batch=64, max_seq=100_000, dims={"S": 10})
    assert any("the KV cache is large" in n for n in r.notes)


def test_no_context_no_plan(arch_file):
    g = lower(arch_file("""
        model m(x: float[B, T, 8]) {
            return Attention(x, 2, causal=true) as attn
        }
    """))
    r = plan_kv_cache(g)
    assert r.graph.meta["kv_plan"] is None
    assert "give --max-seq" in r.notes[0]
    assert plan_kv_cache(g, max_seq=4).graph.meta["kv_plan"].entries[0].slots == 4


def test_dump_kv_table(arch_file, capsys):
    path = arch_file(MODEL)
    assert main(["dump", str(path), "--kv", "--batch", "2", "--max-seq", "32", "--dim", "S=10",
                 "--layer", "mha"]) == 0
    out = capsys.readouterr().out
    assert "KV cache plan: batch B=2, S_max=32 (--max-seq)" in out
    assert "  mha.attn                 self    (2, 8, 32, 8)" in out
    assert "  mqa.attn                 window  (2, 1, 16, 8)" in out
    assert "  cross.attn               cross   (2, 4, 10, 16)" in out
    assert main(["dump", str(path), "--kv", "--max-memory", "1KB", "--dim", "S=10"]) == 2
    err = capsys.readouterr().err
    assert "error: the KV cache needs" in err and "--max-memory allows 1.00 KiB" in err
