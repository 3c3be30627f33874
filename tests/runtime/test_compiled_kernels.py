"""Each Numba kernel against its `ref_` twin, over odd and even shapes and both float dtypes."""
import math

import numpy as np
import pytest

from archc.dsl.ops import activations
from archc.runtime.kernels import attention as ka, elementwise as ke, ffn as kf, norm as kn
from archc.runtime.kernels import position as kp

SHAPES = [(1, 3), (7, 64), (33, 5)]
DTYPES = [np.float32, np.float64]


def tol(dt):
    return 1e-5 if dt == np.float32 else 1e-12


def rand(rng, shape, dt, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dt)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dt", DTYPES)
def test_norms(shape, dt):
    rng = np.random.default_rng(0)
    x, r = rand(rng, shape, dt, 3), rand(rng, shape, dt)
    w, b = rand(rng, shape[-1:], dt), rand(rng, shape[-1:], dt)
    out, s = np.empty_like(x), np.empty_like(x)
    kn.layernorm(out, x, w, b, 1e-5)
    np.testing.assert_allclose(out, kn.ref_layernorm(x, w, b, 1e-5), atol=tol(dt), rtol=tol(dt))
    kn.rmsnorm(out, x, w, 1e-6)
    np.testing.assert_allclose(out, kn.ref_rmsnorm(x, w, 1e-6), atol=tol(dt), rtol=tol(dt))
    kn.add_layernorm(s, out, x, r, w, b, 1e-5)
    rs, ry = kn.ref_add_layernorm(x, r, w, b, 1e-5)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_allclose(out, ry, atol=tol(dt), rtol=tol(dt))
    kn.add_rmsnorm(s, out, x, r, w, 1e-6)
    rs, ry = kn.ref_add_rmsnorm(x, r, w, 1e-6)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_allclose(out, ry, atol=tol(dt), rtol=tol(dt))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dt", DTYPES)
def test_softmax(shape, dt):
    rng = np.random.default_rng(1)
    x = rand(rng, shape, dt, 5)
    x[0, :] = -np.inf                       # a fully masked row gives zeros, as the ref
    out = np.empty_like(x)
    kn.softmax(out, x)
    np.testing.assert_allclose(out, kn.ref_softmax(x), atol=tol(dt))
    assert not out[0].any()


@pytest.mark.parametrize("act", activations())     # every op with the activation trait
@pytest.mark.parametrize("dt", DTYPES)
def test_activations(act, dt):
    rng = np.random.default_rng(2)
    x = rand(rng, (7, 33), dt, 4)
    x[0, :4] = [-80, 80, 0, -0.5]           # the overflow-prone ends of sigmoid/silu
    out = np.empty_like(x)
    ke.activation(out.reshape(-1), x.reshape(-1), ke.ACT[act])
    np.testing.assert_allclose(out, getattr(ke, f"ref_{act}")(x), atol=tol(dt), rtol=tol(dt))
    # the fused epilogue of a matrix product, and the merged gated unit
    b = rand(rng, (33,), dt)
    y = x.copy()
    ke.bias_act(y, b, ke.ACT[act])
    np.testing.assert_allclose(y, getattr(ke, f"ref_{act}")(x + b), atol=tol(dt), rtol=tol(dt))
    g = np.empty((7, 16), dt)
    kf.glu_merged(g, x[:, :32].copy(), ke.ACT[act])
    w = np.eye(32, dtype=dt)
    np.testing.assert_allclose(g, kf.ref_linear_glu(x[:, :32], w, None, act), atol=tol(dt),
                               rtol=tol(dt))


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rot", [None, 4])
@pytest.mark.parametrize("T", [1, 7])
def test_rope(interleaved, rot, T):
    rng = np.random.default_rng(3)
    B, H, D = 2, 3, 8
    r = rot or D
    x = rand(rng, (B, T, H * D), np.float32)
    pos = rng.integers(0, 50, (B, T)).astype(np.int64)
    inv = 10000.0 ** (-np.arange(0, r, 2, dtype=np.float64) / r)
    cs = np.empty((B * T, 2, r // 2))
    cut = min(3, B * T)                          # two lanes' row ranges
    kp.rope_table(cs, pos.reshape(-1), inv, 0, cut)
    kp.rope_table(cs, pos.reshape(-1), inv, cut, B * T)
    want = kp.ref_rope(x, pos, heads=H, head_dim=D, rotary_dim=r, interleaved=interleaved)
    out = np.full_like(x, np.nan)
    x4, out4 = x.reshape(B, T, H, D), out.reshape(B, T, H, D)
    for n0, n1 in ((0, 1), (1, B * T)):          # two lanes' row ranges make the whole
        kp.rope_apply(out4, x4, cs, interleaved, n0, n1)
    np.testing.assert_allclose(out, want, atol=1e-5)
    kp.rope_apply(x4, x4, cs, interleaved, 0, B * T)     # in place
    np.testing.assert_allclose(x, want, atol=1e-5)


CASES = [  # (T, S, H, Hkv, causal, window, masked)
    (1, 1, 2, 2, True, None, False),
    (7, 7, 4, 2, True, None, False),
    (7, 7, 4, 1, True, 3, False),
    (3, 9, 2, 2, True, None, False),       # T < S: queries sit at the end
    (5, 5, 2, 2, False, 2, True),          # symmetric window, padding mask
    (33, 33, 3, 3, False, None, True),
]


@pytest.mark.parametrize("T,S,H,Hkv,causal,window,masked", CASES)
@pytest.mark.parametrize("dt", DTYPES)
def test_attention(T, S, H, Hkv, causal, window, masked, dt):
    rng = np.random.default_rng(4)
    B, D = 2, 5
    q = rand(rng, (B, T, H * D), dt)
    k, v = rand(rng, (B, S, Hkv * D), dt), rand(rng, (B, S, Hkv * D), dt)
    mask = rng.random((B, S)) > 0.3 if masked else None
    kc, vc = np.empty((B, Hkv, S, D), dt), np.empty((B, Hkv, S, D), dt)
    kpos = np.empty(S, np.int64)
    ka.kv_write(kc, vc, kpos, k.reshape(B, S, Hkv, D), v.reshape(B, S, Hkv, D), 0, 0, S)
    out = np.empty_like(q)
    m = mask if masked else np.zeros((B, 0), bool)
    bias = np.broadcast_to(np.zeros(1, dt), (B, H, T, 0))
    ka.attend(out.reshape(B, T, H, D), q.reshape(B, T, H, D), kc, vc, kpos, S, S - T, m, bias,
              causal, window or 0, 1 / math.sqrt(D), np.empty((B * H, S)), np.empty((B * H, D)))
    want = ka.ref_attention(q, k, v, mask, heads=H, kv_heads=Hkv, causal=causal, window=window)
    np.testing.assert_allclose(out, want, atol=tol(dt) * 10)


def test_attention_bias_and_ring_slots():
    """An additive bias, and keys stored out of order (a wrapped ring) give the same."""
    rng = np.random.default_rng(5)
    B, T, S, H, D = 1, 1, 6, 2, 4
    q, k, v = (rand(rng, (B, n, H * D), np.float32) for n in (T, S, S))
    bias = rand(rng, (1, H, 1, S), np.float32)
    want = ka.ref_attention(q, k, v, np.ones((B, S), bool), bias, heads=H, causal=True)
    roll = 4                                 # slot s holds position (s + roll) % S
    order = (np.arange(S) + roll) % S
    kc = k.reshape(B, S, H, D)[:, order].transpose(0, 2, 1, 3).copy()
    vc = v.reshape(B, S, H, D)[:, order].transpose(0, 2, 1, 3).copy()
    out = np.empty_like(q)
    ka.attend(out.reshape(B, T, H, D), q.reshape(B, T, H, D), kc, vc, order.astype(np.int64), S,
              S - 1, np.zeros((B, 0), bool), np.broadcast_to(bias, (B, H, T, S)), True, 0,
              1 / math.sqrt(D), np.empty((B * H, S)), np.empty((B * H, D)))
    np.testing.assert_allclose(out, want, atol=1e-5)
