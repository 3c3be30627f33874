"""Softmax, attention and the norms stay finite on extreme inputs, in the NumPy references
and in the compiled kernels beside them.

Defined behaviour (documented in runtime/kernels/norm.py and attention.py): a softmax row
whose every entry is -inf (every key masked) is all zeros, not NaN; layernorm of a constant
row is its bias (0 / sqrt(eps) = 0); rmsnorm of zeros is zeros.
"""
from __future__ import annotations

import numpy as np
import pytest

from archc.runtime.kernels import norm
from archc.runtime.kernels.attention import ref_attention

EXTREME = np.array([[1e4, -1e4, 0.0, 1e4],
                    [-1e4, -1e4, -1e4, -1e4],
                    [3e4, 1.0, 2.0, -3e4]], dtype=np.float32)


def test_ref_softmax_of_huge_logits_is_finite_and_exact():
    p = norm.ref_softmax(EXTREME)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0], [0.5, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(p[1], [0.25] * 4)
    np.testing.assert_allclose(p[2], [1.0, 0.0, 0.0, 0.0])


def test_ref_softmax_all_masked_row_is_zeros():
    x = np.array([[-np.inf] * 4, [0.0, -np.inf, 0.0, -np.inf]], dtype=np.float32)
    np.testing.assert_array_equal(norm.ref_softmax(x), [[0, 0, 0, 0], [0.5, 0, 0.5, 0]])


def test_ref_attention_all_masked_query_gives_zeros_not_nan():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 3, 4)).astype(np.float32) * 1e4 for _ in range(3))
    mask = np.zeros((1, 3), dtype=bool)              # every key masked
    out = ref_attention(q, k, v, mask=mask, heads=2)
    np.testing.assert_array_equal(out, np.zeros_like(out))
    out = ref_attention(q, k, v, heads=2, causal=True)  # scores ~1e8: still finite
    assert np.all(np.isfinite(out))


def test_ref_layernorm_of_a_constant_row_is_the_bias():
    x = np.full((2, 8), 1e4, dtype=np.float32)
    w, b = np.full(8, 2.0, np.float32), np.arange(8, dtype=np.float32)
    np.testing.assert_array_equal(norm.ref_layernorm(x, w, b), np.tile(b, (2, 1)))


def test_ref_rmsnorm_of_zeros_is_zeros():
    x = np.zeros((2, 8), dtype=np.float32)
    out = norm.ref_rmsnorm(x, np.ones(8, np.float32))
    np.testing.assert_array_equal(out, x)


def test_ref_norms_of_huge_values_are_finite():
    x = np.array([[3e38, -3e38, 3e38, -3e38]], dtype=np.float32)   # near float32's max
    w = np.ones(4, np.float32)
    np.testing.assert_allclose(norm.ref_layernorm(x, w, np.zeros(4, np.float32)),
                               [[1, -1, 1, -1]], rtol=1e-5)
    np.testing.assert_allclose(norm.ref_rmsnorm(x, w), [[1, -1, 1, -1]], rtol=1e-5)


@pytest.fixture(scope="module")
def compiled():
    pytest.importorskip("numba")
    if not hasattr(norm, "softmax"):
        pytest.skip("no compiled norm kernels")
    return norm


def test_compiled_softmax_matches_ref_on_extremes(compiled):
    x = np.concatenate([EXTREME, np.full((1, 4), -np.inf, np.float32)])
    out = np.empty_like(x)
    compiled.softmax(out, x)
    np.testing.assert_allclose(out, norm.ref_softmax(x), atol=1e-7)
    np.testing.assert_array_equal(out[-1], 0.0)


def test_compiled_norms_on_constant_and_zero_rows(compiled):
    x = np.concatenate([np.full((1, 8), 1e4, np.float32), np.zeros((1, 8), np.float32)])
    w, b = np.full(8, 2.0, np.float32), np.arange(8, dtype=np.float32)
    out = np.empty_like(x)
    compiled.layernorm(out, x, w, b, 1e-5)
    np.testing.assert_allclose(out, norm.ref_layernorm(x, w, b), atol=1e-6)
    compiled.rmsnorm(out, x, w, 1e-6)
    np.testing.assert_array_equal(out[1], 0.0)
    assert np.all(np.isfinite(out))


def test_row_view_of_a_zero_width_tensor():
    # found by tests/fuzz/fuzz_arch.py (`d_model = 0` in a mutated T5, before zero-size
    # parameters became an error): reshape(-1, 0) cannot infer the row count
    from archc.runtime.steps import rows
    assert rows(np.zeros((1, 2, 0), np.float32)).shape == (2, 0)
