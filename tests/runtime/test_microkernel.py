"""The LLVM-IR micro-kernels (runtime/kernels/microkernel.py) against ref_linear: whole
and partial tiles in both directions, one lane's column range, depths of 0 and 1, and
NaN/inf propagation (no finite-math assumptions)."""
import numpy as np
import pytest

from archc.runtime.kernels import linalg as kl, microkernel as uk

KERNELS = {"uk6x16": uk.gemm_uk6x16, "uk12x32": uk.gemm_uk12x32}


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (6, 8, 16), (7, 33, 20), (13, 64, 37),
                                   (24, 5, 64), (130, 300, 71), (5, 0, 9),
                                   (9, 300, 300), (7, 3000, 40)])   # several groups of panels
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_micro_kernel_matches_reference(M, K, N, name):
    rng = np.random.default_rng(M * 1000 + K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    wt = rng.standard_normal((N, K)).astype(np.float32)
    want = kl.ref_linear(x, wt.T)
    y = np.full((M, N), np.nan, np.float32)
    KERNELS[name](y, x, wt, 0, N)
    np.testing.assert_allclose(y, want, atol=1e-5 * max(K, 1), rtol=1e-5)
    c0, c1 = N // 3, N - N // 4
    y = np.full((M, N), np.nan, np.float32)
    KERNELS[name](y, x, wt, c0, c1)
    np.testing.assert_allclose(y[:, c0:c1], want[:, c0:c1], atol=1e-5 * max(K, 1), rtol=1e-5)
    assert np.isnan(y[:, :c0]).all() and np.isnan(y[:, c1:]).all()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_row_count_past_the_whole_blocks(name):
    # the rows past the last whole MR-row block: the kernel reads x's last row in place of
    # the missing ones and stores only the real rows and columns. Every remainder, with and
    # without whole blocks before it; y and x are the top-left of wider arrays, so a store
    # past the last row or column, or a read past x's, would show
    rng = np.random.default_rng(5)
    wt = rng.standard_normal((21, 17)).astype(np.float32)
    for M in range(1, 27):
        x_wide = np.full((M + 12, 20), np.nan, np.float32)
        x = x_wide[:M, :17]
        x[:] = rng.standard_normal((M, 17))
        y_wide = np.full((M + 12, 40), np.nan, np.float32)
        y = y_wide[:M, :21]
        KERNELS[name](y, x, wt, 0, 21)
        np.testing.assert_allclose(y, kl.ref_linear(np.ascontiguousarray(x), wt.T),
                                   atol=1e-4, rtol=1e-5)
        assert np.isnan(y_wide[M:]).all() and np.isnan(y_wide[:, 21:]).all()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_micro_kernel_propagates_nan_and_inf(name):
    x = np.ones((8, 16), np.float32)
    x[1, 3], x[6, 0] = np.nan, np.inf
    wt = np.ones((40, 16), np.float32)
    y = np.zeros((8, 40), np.float32)
    KERNELS[name](y, x, wt, 0, 40)
    assert np.isnan(y[1]).all() and np.isposinf(y[6]).all() and (y[0] == 16).all()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_micro_kernel_writes_into_a_column_slice_and_reads_a_row_view(name):
    # y and x as views with row strides wider than their widths (a packed-weight product
    # hands each panel's y[:, j0:j1] to the kernel)
    rng = np.random.default_rng(7)
    x_wide = rng.standard_normal((13, 50)).astype(np.float32)
    x = x_wide[:, 3:40]
    wt_wide = rng.standard_normal((37, 45)).astype(np.float32)
    wt = wt_wide[:, 5:42]               # rows strided too: packed 8 x 8 blocks at a time
    y_wide = np.full((13, 90), np.nan, np.float32)
    y = y_wide[:, 20:57]
    KERNELS[name](y, x, wt, 0, 37)
    np.testing.assert_allclose(y, kl.ref_linear(np.ascontiguousarray(x), wt.T),
                               atol=1e-4, rtol=1e-5)
    assert np.isnan(y_wide[:, :20]).all() and np.isnan(y_wide[:, 57:]).all()


@pytest.mark.parametrize("D", [64, 20, 16, 5])
def test_attention_products_match_reference(D):
    # product_nt (Q K^T) and product_nn (P V), V a view into a wider array as the KV cache
    # hands it (rows D_wide apart): whole 16-column panels copied as vectors, partial ones
    # value by value
    rng = np.random.default_rng(D)
    q = rng.standard_normal((13, D)).astype(np.float32)
    k = rng.standard_normal((37, D)).astype(np.float32)
    v_wide = rng.standard_normal((37, D + 11)).astype(np.float32)
    v = v_wide[:, 3:3 + D]
    buffers = uk.scratch(max(D, 37), 16, False)
    s = np.full((13, 37), np.nan, np.float32)
    uk.product_nt(s, q, k, buffers)
    np.testing.assert_allclose(s, kl.ref_linear(q, k.T), atol=1e-4, rtol=1e-5)
    out = np.full((13, D), np.nan, np.float32)
    uk.product_nn(out, s, v, buffers)
    np.testing.assert_allclose(out, kl.ref_linear(s, np.ascontiguousarray(v)), atol=1e-3,
                               rtol=1e-5)
