"""Prefill attention through BLAS (steps._attention_blas + kernels/prefill.py)
against ref_attention: causal / window / padding mask / score bias, MHA / GQA / MQA, query
rows T in {5, 33} over S >= T keys (and S < T: causal rows that see no key), on one lane
and on two (runtime/lanes.py); per head through BLAS, or for a short prompt one compiled call
per lane (attention_rows); planned, allocation-free."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.dsl.lower import lower
from archc.dsl.ops import attention as op_attention
from archc.runtime import seq2seq
from archc.api import executor
from archc.runtime.kv_cache import Session
from archc.runtime.reference import run_reference
from archc.runtime.kernels import prefill as k_prefill
from archc.runtime.kernels.attention import attend, ref_attention

D = 8
ROOT = Path(__file__).resolve().parents[2]


def _model(arch_file, H, Hkv, causal, window, masked, biased):
    args = "q, k, v" + (", mask" if masked else "") + (", bias" if biased else "")
    extra = (", mask: int[B, S]" if masked else "") + \
        (f", bias: float[1, {H}, T, S]" if biased else "")
    win = f", window={window}" if window else ""
    return lower(arch_file(f"""
        model m(q: float[B, T, {H * D}], k: float[B, S, {Hkv * D}], v: float[B, S, {Hkv * D}]{extra}) {{
            return out = attention({args}, heads={H}, kv_heads={Hkv},
                                   causal={str(causal).lower()}{win})
        }}
    """))


CASES = [  # H, Hkv, causal, window, masked, biased (the op takes a bias after a mask)
    (4, 4, True, None, False, False),
    (4, 2, True, None, True, False),       # GQA + padding
    (4, 1, True, 3, True, True),           # MQA + sliding window + padding + bias
    (2, 2, False, None, True, True),
    (4, 2, False, 4, True, False),         # symmetric window
]


def _assert_runs_without_allocating(prog):
    """Steady state: the products write into planned scratch (each lane's probabilities
    and micro-kernel panels) and the output's head slices."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        prog.execute()
        assert tracemalloc.get_traced_memory()[1] - before < 2048
    finally:
        tracemalloc.stop()


def _run(arch_file, H, Hkv, causal, window, masked, biased, T, extra, threads):
    """(compiled output, ref_attention's, the executor, the inputs) of one case."""
    B, S = 2, T + extra
    rng = np.random.default_rng(T * 100 + S * 10 + H + Hkv)
    inputs = {"q": rng.standard_normal((B, T, H * D)).astype(np.float32),
              "k": rng.standard_normal((B, S, Hkv * D)).astype(np.float32),
              "v": rng.standard_normal((B, S, Hkv * D)).astype(np.float32)}
    if masked:
        mask = rng.integers(0, 2, (B, S))
        mask[0, :] = 1
        mask[1, 0] = 0          # with causal and S == T, batch 1's first query sees nothing
        inputs["mask"] = mask
    if biased:
        inputs["bias"] = rng.standard_normal((1, H, T, S)).astype(np.float32)
    g = _model(arch_file, H, Hkv, causal, window, masked, biased)
    ex = executor(g, {}, threads=threads)
    got = ex.run(inputs)["out"]
    want = ref_attention(inputs["q"], inputs["k"], inputs["v"], inputs.get("mask"),
                         inputs.get("bias"), heads=H, kv_heads=Hkv, causal=causal,
                         window=window)
    return got, want, ex, inputs


@pytest.mark.parametrize("H,Hkv,causal,window,masked,biased", CASES)
@pytest.mark.parametrize("T,extra", [(5, 0), (5, 4), (33, 0), (33, 7), (33, -20)])
@pytest.mark.parametrize("threads", [1, 2])
def test_short_prefill_attention_is_one_call_per_lane(arch_file, monkeypatch, H, Hkv, causal,
                                                      window, masked, biased, T, extra,
                                                      threads):
    # T x keys <= SMALL_PAIRS: attention_rows does a lane's every head in one call
    monkeypatch.setattr(k_prefill, "SMALL_PAIRS", 10**9)
    got, want, ex, _ = _run(arch_file, H, Hkv, causal, window, masked, biased, T, extra,
                            threads)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    if masked and causal and extra == 0:
        assert not got[1, 0].any()        # a fully masked row is zeros, not NaN
    prog = next(iter(ex._programs.values()))
    fns = [fn for fn, _ in prog.calls()]
    assert fns.count(k_prefill.attention_rows) == prog.n_lanes == threads
    assert np.matmul not in fns and attend not in fns and not prog.unplanned
    _assert_runs_without_allocating(prog)


@pytest.mark.parametrize("H,Hkv,causal,window,masked,biased", CASES)
@pytest.mark.parametrize("T,extra", [(5, 0), (5, 4), (33, 0), (33, 7), (33, -20)])
@pytest.mark.parametrize("block,threads", [(64, 1), (8, 1), (64, 2), (8, 2)])
@pytest.mark.parametrize("micro", [False, True])
def test_prefill_attention_matches_reference(arch_file, monkeypatch, H, Hkv, causal, window,
                                             masked, biased, T, extra, block, threads, micro):
    # block 8: the masked products go in row blocks over the keys each block sees;
    # 2 threads: the (batch, head) pairs are shared out between two lanes; micro: a lane's
    # heads in one attention_blocks call, its products by the micro-kernel; else BLAS per
    # (head, block)
    monkeypatch.setattr(op_attention, "PROMPT_BLOCK", block)      # the rule's and the kernel's
    monkeypatch.setattr(k_prefill, "SMALL_PAIRS", 0)      # not attention_rows, however short
    monkeypatch.setattr(k_prefill, "MICRO", micro)
    got, want, ex, inputs = _run(arch_file, H, Hkv, causal, window, masked, biased, T, extra,
                                 threads)
    B = 2
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    if masked and causal and extra == 0:
        assert not got[1, 0].any()        # a fully masked row is zeros, not NaN

    prog = next(iter(ex._programs.values()))
    fns = [fn for fn, _ in prog.calls()]
    lanes = prog.n_lanes
    if micro:
        assert fns.count(k_prefill.attention_blocks) == lanes == threads
        assert np.matmul not in fns and attend not in fns and not prog.unplanned
        _assert_runs_without_allocating(prog)
        return
    assert k_prefill.softmax_masked in fns and attend not in fns
    assert lanes == threads
    rows = op_attention.prompt_rows(T, causal, window)
    # each lane has its own probabilities: masked, blocks of `block` rows; else whole heads
    # (up to PROMPT_ROWS)
    assert rows == min(block if causal or window else op_attention.PROMPT_ROWS, T)
    assert fns.count(np.matmul) == 2 * B * H * -(-T // rows) and prog.uses_blas
    if lanes > 1 and T > 5:
        assert any(s.fn == ex.lanes.run for s in prog.steps)
    assert not prog.unplanned
    _assert_runs_without_allocating(prog)


@pytest.mark.parametrize("micro", [False, True])
def test_a_long_unmasked_prompt_goes_in_blocks_of_prompt_rows(arch_file, monkeypatch, micro):
    # the planned probabilities hold PROMPT_ROWS rows a lane, however long the prompt
    monkeypatch.setattr(op_attention, "PROMPT_ROWS", 8)
    monkeypatch.setattr(k_prefill, "SMALL_PAIRS", 0)
    monkeypatch.setattr(k_prefill, "MICRO", micro)
    got, want, ex, _ = _run(arch_file, 2, 2, False, None, True, True, 33, 7, 2)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    prog = next(iter(ex._programs.values()))
    assert prog.plan.slots[next(k for k in prog.plan.slots if k.endswith("#probs"))][1] \
        == prog.plan_lanes * 8 * 40 * 4
    _assert_runs_without_allocating(prog)


def test_decode_rows_keep_the_attend_kernel(arch_file):
    # T <= PREFILL_ROWS: the scalar kernel, no BLAS in the attention
    g = _model(arch_file, 2, 1, True, None, False, False)
    ex = executor(g, {})
    rng = np.random.default_rng(0)
    inputs = {"q": rng.standard_normal((1, 2, 2 * D)).astype(np.float32),
              "k": rng.standard_normal((1, 6, D)).astype(np.float32),
              "v": rng.standard_normal((1, 6, D)).astype(np.float32)}
    got = ex.run(inputs)["out"]
    np.testing.assert_allclose(got, ref_attention(inputs["q"], inputs["k"], inputs["v"],
                                                  heads=2, kv_heads=1, causal=True),
                               atol=2e-5, rtol=0)
    fns = [s.fn for s in next(iter(ex._programs.values())).steps]
    assert attend in fns and k_prefill.softmax_masked not in fns


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_softmax_masked_kernel(dt):
    # the kernel alone: row i of T=3 queries at positions 2..4 over S=5 keys
    rng = np.random.default_rng(3)
    raw = rng.standard_normal((3, 5)).astype(dt)
    bias = rng.standard_normal((3, 5)).astype(dt)
    mask = np.array([True, False, True, True, True])
    p = raw.copy()
    k_prefill.softmax_masked(p, 2, mask, bias, True, 2, 0.5)
    s = raw * 0.5 + bias
    ok = mask[None, :] & (np.arange(5)[None, :] <= np.arange(2, 5)[:, None]) & \
        (np.arange(5)[None, :] > np.arange(2, 5)[:, None] - 2)
    e = np.where(ok, np.exp(s - np.where(ok, s, -np.inf).max(1, keepdims=True)), 0)
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-6, atol=1e-7)


CACHED = """
config { d = 32  heads = 4  vocab = 32  n_ctx = 64 }
model tiny(ids: int[B, T]) {
    param wte: float[vocab, d] = normal(0.5)
    x = embedding(ids, wte)
    repeat 2 as layers {
        x = x + Attention(RMSNorm(x), heads, kv_heads=2, causal=true, rope=true,
                          bias=false) as attn
    }
    logits = RMSNorm(x) @ transpose(wte)
    return logits
}
"""


def _count_blas(monkeypatch):
    calls = []
    orig = k_prefill.attend_blas

    def counted(*a):
        calls.append(a[4:6])            # (keys, first query position)
        return orig(*a)
    monkeypatch.setattr(k_prefill, "attend_blas", counted)
    return calls


def test_session_prefill_in_two_chunks(tmp_path, monkeypatch):
    # a prompt into the KV cache through BLAS, then a second chunk at position 7 (queries
    # 7..12 over keys 0..12), then one decode step (attend): logits = a full forward
    path = tmp_path / "m.arch"
    path.write_text(CACHED)
    model = archc.load(path, seed=1)
    ex = executor(model.graph, model.params)
    calls = _count_blas(monkeypatch)
    ids = np.random.default_rng(0).integers(0, 32, (2, 14))
    sess = Session(ex, 2, 16)
    got = [sess.forward({"ids": ids[:, :7]}, {"B": 2, "T": 7})["logits"].copy(),
           sess.forward({"ids": ids[:, 7:13]}, {"B": 2, "T": 6})["logits"].copy(),
           sess.forward({"ids": ids[:, 13:]}, {"B": 2, "T": 1})["logits"].copy()]
    assert calls == [(7, 0), (7, 0), (13, 7), (13, 7)]          # 2 layers per chunk
    assert ex._programs and not any(p.unplanned for p in ex._programs.values())
    want = run_reference(model.graph, {"ids": ids}, model.params)["logits"]
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-4, rtol=0)


def test_seq2seq_decoder_prompt_cross_attention(monkeypatch):
    # T5: a 6-token decoder prompt attends to the cached encoder keys through BLAS (self and
    # cross), then one decode step: logits = the reference over the whole decoder sequence
    fix = ROOT / "tests" / "fixtures" / "hf" / "t5"
    if not (fix / "io.npz").is_file():
        pytest.skip("no t5 fixture")
    model = archc.load(ROOT / "examples" / "t5.arch", weights=fix)
    ex = executor(model.graph, model.params)
    ids = np.load(fix / "io.npz")["input_ids"]
    B, Tenc = ids.shape
    dims = {"T": Tenc, "B": B}
    s2s = seq2seq.for_executor(ex, ["ids", "mask"], "B")
    dec = s2s.decoder(dims)
    sess = Session(dec, B, 16, length="S", dims=dims, ones=("decoder_mask",))
    s2s.encode({"ids": ids, "mask": np.ones_like(ids)}, dims)
    calls = _count_blas(monkeypatch)
    d = np.random.default_rng(1).integers(0, 100, (B, 7))
    ones = np.ones_like(d)
    got = [sess.forward({"decoder_ids": d[:, :6], "decoder_mask": ones[:, :6]},
                        {"S": 6})["logits"].copy(),
           sess.forward({"decoder_ids": d[:, 6:], "decoder_mask": ones[:, 6:]},
                        {"S": 1})["logits"].copy()]
    assert (Tenc, 0) in calls and (6, 0) in calls             # cross and self
    assert dec._programs and not any(p.unplanned for p in dec._programs.values())
    want = run_reference(model.graph, {"ids": ids, "mask": np.ones_like(ids),
                                       "decoder_ids": d, "decoder_mask": ones},
                         model.params)["logits"]
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-4, rtol=0)


def test_short_attention_reads_heads_as_rows_only_where_they_are_contiguous():
    # attention_rows reads each head's (D,) row as a contiguous array; heads whose last axis
    # is strided go through BLAS per head, which takes any view
    B, T, H, D = 2, 5, 2, 4
    rng = np.random.default_rng(0)
    wide = rng.standard_normal((B, T, H, 2 * D)).astype(np.float32)
    k4 = rng.standard_normal((B, H, T, D)).astype(np.float32)
    v4 = rng.standard_normal((B, H, T, D)).astype(np.float32)
    mask = np.ones((B, T), np.bool_)
    bias4 = np.broadcast_to(np.zeros(1, np.float32), (B, H, T, 0))
    probs = np.empty((1, T, T), np.float32)                 # one lane's
    want = ref_attention(wide[..., ::2].reshape(B, T, H * D), k4.transpose(0, 2, 1, 3)
                         .reshape(B, T, H * D), v4.transpose(0, 2, 1, 3).reshape(B, T, H * D),
                         heads=H)
    for q4, fn in ((np.ascontiguousarray(wide[..., ::2]), k_prefill.attention_rows),
                   (wide[..., ::2], np.matmul)):
        out4 = np.zeros((B, T, H, D), np.float32)
        calls = k_prefill.attention_calls(out4, q4, k4, v4, T, 0, mask, bias4, False, 0,
                                          1 / np.sqrt(D), probs, None)
        assert {f for lane in calls for f, _ in lane} >= {fn}
        for lane in calls:
            for f, args in lane:
                f(*args)
        np.testing.assert_allclose(out4.reshape(B, T, H * D), want, atol=2e-5, rtol=0)
