"""The decode matrix-vector kernel and the prompt product kernel against ref_linear, and the
executor's weight layout."""
import numpy as np
import pytest

import archc
from archc.runtime.kernels import elementwise as ke, ffn as kf, linalg as kl

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 7, 5), (2, 64, 33), (4, 33, 130), (3, 5, 2)])
@pytest.mark.parametrize("nt", [1, 2, 3])
@pytest.mark.parametrize("dt", DTYPES)
def test_gemv_t(M, K, N, nt, dt):
    rng = np.random.default_rng(M * 100 + K + N)
    x = rng.standard_normal((M, K)).astype(dt)
    w = rng.standard_normal((K, N)).astype(dt)
    b = rng.standard_normal(N).astype(dt)
    wt = np.ascontiguousarray(w.T)
    tol = 1e-5 if dt == np.float32 else 1e-12
    for act in ("identity", "relu", "gelu_tanh", "silu"):
        y = np.full((M, N), np.nan, dt)
        kl.gemv_t(y, x, wt, b, ke.ACT[act], nt)
        want = kl.ref_linear(x, w, b) if act == "identity" else kf.ref_linear_act(x, w, b, act)
        np.testing.assert_allclose(y, want, atol=tol * K, rtol=tol)


@pytest.mark.parametrize("M,K,N", [(5, 1, 1), (8, 33, 12), (13, 64, 37), (200, 17, 9),
                                   (130, 768, 21)])
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("tile", sorted(kl.TILES))
def test_gemm_nt(M, K, N, dt, tile):
    # whole tiles, leftover rows and columns, two row blocks (M = 200 > 192), and one
    # lane's column range leaving the rest untouched, with every tile
    assert kl.GEMM_ROW_BLOCK < 200
    rng = np.random.default_rng(M * 1000 + K + N)
    x = rng.standard_normal((M, K)).astype(dt)
    w = rng.standard_normal((K, N)).astype(dt)
    wt = np.ascontiguousarray(w.T)
    tol = 1e-5 if dt == np.float32 else 1e-12
    y = np.full((M, N), np.nan, dt)
    kl.TILES[tile](y, x, wt, 0, N)
    np.testing.assert_allclose(y, kl.ref_linear(x, w), atol=tol * K, rtol=tol)
    c0, c1 = N // 3, N - N // 4
    y = np.full((M, N), np.nan, dt)
    kl.TILES[tile](y, x, wt, c0, c1)
    np.testing.assert_allclose(y[:, c0:c1], kl.ref_linear(x, w)[:, c0:c1], atol=tol * K,
                               rtol=tol)
    assert np.isnan(y[:, :c0]).all() and np.isnan(y[:, c1:]).all()


@pytest.mark.parametrize("tile", sorted(kl.TILES))
def test_gemm_nt_propagates_nan_and_inf(tile):
    # fastmath here is only reassociation and contraction: no finite-math assumptions
    x = np.ones((8, 16), np.float32)
    x[1, 3], x[6, 0] = np.nan, np.inf
    wt = np.ones((8, 16), np.float32)
    y = np.zeros((8, 9), np.float32)[:, :8]
    y = np.ascontiguousarray(y)
    kl.TILES[tile](y, x, wt, 0, 8)
    assert np.isnan(y[1]).all() and np.isposinf(y[6]).all() and (y[0] == 16).all()


def test_linear_weights_output_major_one_copy():
    # the executor stores matrix weights output-major and hands them back to the model,
    # so the process holds one copy; a tied LM head (transpose of the embedding) is a view
    model = archc.load("examples/gpt2.arch", config={"n_layer": 1, "d_model": 32, "n_head": 2,
                                                     "vocab": 50, "n_ctx": 16})
    ex = model.compiled(1)
    w = ex.weights["layers.0.mlp.up.weight"]
    assert w.flags.f_contiguous and not w.flags.c_contiguous
    assert model.params["layers.0.mlp.up.weight"] is w
    assert ex.weights["wte"].flags.c_contiguous            # also gathered by the embedding
    head = [v for v in ex.folded_values.values()
            if isinstance(v, np.ndarray) and v.shape == (32, 50)]
    assert head and all(np.shares_memory(h, ex.weights["wte"]) for h in head)
    ids = np.array([[1, 2, 3]])
    np.testing.assert_allclose(ex.run({"ids": ids})["logits"],
                               model.run({"ids": ids}, executor="reference")["logits"],
                               atol=1e-5, rtol=1e-5)
