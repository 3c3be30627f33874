"""ref_attention and ref_alibi against hand computations and a per-head loop."""
from __future__ import annotations

import math

import numpy as np
import pytest

from archc.runtime.kernels.attention import alibi_slopes, ref_alibi, ref_attention


def loop_attention(q, k, v, H, Hkv, causal=False, window=None, mask=None, bias=None,
                   scale=None):
    """One query, one head at a time: the textbook formula."""
    B, T, C = q.shape
    S, D = k.shape[1], C // H
    out = np.zeros((B, T, C))
    s = 1 / math.sqrt(D) if scale is None else scale
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)
            for i in range(T):
                pos = S - T + i
                scores, vals = [], []
                for j in range(S):
                    if causal and j > pos:
                        continue
                    if window is not None and (j <= pos - window or
                                               (not causal and j >= pos + window)):
                        continue
                    if mask is not None and not mask[b, j]:
                        continue
                    sc = q[b, i, h * D:(h + 1) * D] @ k[b, j, g * D:(g + 1) * D] * s
                    if bias is not None:
                        sc += np.broadcast_to(bias, (B, H, T, S))[b, h, i, j]
                    scores.append(sc)
                    vals.append(v[b, j, g * D:(g + 1) * D])
                if scores:
                    p = np.exp(np.array(scores) - max(scores))
                    out[b, i, h * D:(h + 1) * D] = (p / p.sum()) @ np.array(vals)
    return out


@pytest.mark.parametrize("H,Hkv,T,S,causal,window", [
    (4, 4, 5, 5, False, None), (4, 2, 5, 5, True, None), (4, 1, 6, 6, True, 3),
    (2, 2, 2, 6, True, None), (2, 1, 3, 7, True, 2), (2, 2, 5, 5, False, 2)])
def test_attention_matches_loop(H, Hkv, T, S, causal, window):
    rng = np.random.default_rng(H * 100 + T * 10 + S)
    D = 3
    q = rng.normal(size=(2, T, H * D))
    k, v = rng.normal(size=(2, S, Hkv * D)), rng.normal(size=(2, S, Hkv * D))
    got = ref_attention(q, k, v, heads=H, kv_heads=Hkv, causal=causal, window=window)
    want = loop_attention(q, k, v, H, Hkv, causal, window)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_attention_mask_bias_scale():
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 4, 6))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    bias = rng.normal(size=(1, 2, 4, 4))
    got = ref_attention(q, k, v, mask, bias, heads=2, scale=1.0)
    np.testing.assert_allclose(got, loop_attention(q, k, v, 2, 2, mask=mask, bias=bias,
                                                   scale=1.0), atol=1e-12)


def test_single_key_returns_its_value_and_all_masked_rows_are_zero():
    q = np.ones((1, 2, 2))
    k = np.array([[[5.0, -1.0]]])
    v = np.array([[[2.0, 3.0]]])
    np.testing.assert_allclose(ref_attention(q, k, v, heads=1), [[[2, 3], [2, 3]]])
    out = ref_attention(q, k, v, np.array([[0]]), heads=1)
    assert np.all(out == 0) and not np.any(np.isnan(out))


def test_two_keys_by_hand():
    # scores 0 and ln 3 (after scale 1): weights 1/4, 3/4
    q = np.array([[[1.0]]])
    k = np.array([[[0.0], [math.log(3)]]])
    v = np.array([[[4.0], [8.0]]])
    np.testing.assert_allclose(ref_attention(q, k, v, heads=1, scale=1.0), [[[7.0]]])


def test_alibi_slopes_and_bias():
    np.testing.assert_allclose(alibi_slopes(8), [2 ** -(i + 1) for i in range(8)])
    # 6 heads: 4 from the power of two, then every other slope of 8 heads' sequence
    np.testing.assert_allclose(alibi_slopes(6), [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8,
                                                 2 ** -1, 2 ** -3])
    b = ref_alibi(np.zeros((1, 3, 4)), heads=2)
    np.testing.assert_allclose(b[0, :, 0], [[-0.125, -0.0625, 0], [-2 ** -8 * 2, -2 ** -8, 0]])
    s = ref_alibi(np.zeros((1, 3, 4)), heads=2, symmetric=True)
    assert s.shape == (1, 2, 3, 3) and s[0, 0, 0, 2] == s[0, 0, 2, 0] == -0.0625 * 2


def test_causal_alibi_equals_the_papers_relative_form():
    # -m (S-1-j) differs from -m (i-j) by a per-row constant: the same softmax
    rng = np.random.default_rng(2)
    q, k, v = rng.normal(size=(1, 5, 8)), rng.normal(size=(1, 5, 8)), rng.normal(size=(1, 5, 8))
    i, j = np.arange(5)[:, None], np.arange(5)[None]
    paper = -alibi_slopes(2)[:, None, None] * (i - j)
    a = ref_attention(q, k, v, None, ref_alibi(k, heads=2), heads=2, causal=True)
    b = ref_attention(q, k, v, None, paper[None], heads=2, causal=True)
    np.testing.assert_allclose(a, b, atol=1e-6)
