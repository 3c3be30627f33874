"""Prefill attention through BLAS (steps._attention_blas + kernels/prefill.py)
against ref_attention: causal / window / padding mask / score bias, MHA / GQA / MQA, query
rows T in {5, 33} over S >= T keys (and S < T: causal rows that see no key); the BLAS
path is the one taken, planned, allocation-free."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from archc.dsl.lower import lower
from archc.runtime import steps
from archc.runtime.executor import Executor
from archc.runtime.kernels import prefill as k_prefill
from archc.runtime.kernels.attention import attend, ref_attention

D = 8


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


@pytest.mark.parametrize("H,Hkv,causal,window,masked,biased", CASES)
@pytest.mark.parametrize("T,extra", [(5, 0), (5, 4), (33, 0), (33, 7), (33, -20)])
@pytest.mark.parametrize("block", [64, 8])
def test_prefill_attention_matches_reference(arch_file, monkeypatch, H, Hkv, causal, window,
                                             masked, biased, T, extra, block):
    # block 8: the masked products go in row blocks over the keys each block sees
    monkeypatch.setattr(steps, "PREFILL_BLOCK", block)
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
    ex = Executor(g, {})
    got = ex.run(inputs)["out"]
    want = ref_attention(inputs["q"], inputs["k"], inputs["v"], inputs.get("mask"),
                         inputs.get("bias"), heads=H, kv_heads=Hkv, causal=causal,
                         window=window)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    if masked and causal and extra == 0:
        assert not got[1, 0].any()        # a fully masked row is zeros, not NaN

    prog = next(iter(ex._programs.values()))
    fns = [s.fn for s in prog.steps]
    assert k_prefill.mask_scores in fns and np.exp in fns and attend not in fns
    blocks = -(-T // block) if causal or window else 1
    assert fns.count(np.matmul) == 2 * B * H * blocks and prog.uses_blas
    assert not prog.unplanned
    # steady state: the products write into planned scratch and the output's head slices
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        prog.execute()
        assert tracemalloc.get_traced_memory()[1] - before < 2048
    finally:
        tracemalloc.stop()


def test_decode_rows_keep_the_attend_kernel(arch_file):
    # T <= PREFILL_ROWS: the scalar kernel, no BLAS in the attention
    g = _model(arch_file, 2, 1, True, None, False, False)
    ex = Executor(g, {})
    rng = np.random.default_rng(0)
    inputs = {"q": rng.standard_normal((1, 2, 2 * D)).astype(np.float32),
              "k": rng.standard_normal((1, 6, D)).astype(np.float32),
              "v": rng.standard_normal((1, 6, D)).astype(np.float32)}
    got = ex.run(inputs)["out"]
    np.testing.assert_allclose(got, ref_attention(inputs["q"], inputs["k"], inputs["v"],
                                                  heads=2, kv_heads=1, causal=True),
                               atol=2e-5, rtol=0)
    fns = [s.fn for s in next(iter(ex._programs.values())).steps]
    assert attend in fns and k_prefill.mask_scores not in fns


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
