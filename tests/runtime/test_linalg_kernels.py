"""The decode matrix-vector kernel against ref_linear, and the executor's weight layout."""
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
