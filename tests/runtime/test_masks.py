"""Additive score masks and matmul's transpose_b: references against hand values, and the
compiled executor against the reference on a written-out attention that does not fuse."""
from __future__ import annotations

import numpy as np

from archc.dsl.lower import lower
from archc.api import executor
from archc.runtime.kernels.linalg import ref_matmul
from archc.runtime.kernels.masks import ref_attention_mask, ref_padding_mask
from archc.runtime.reference import run_reference

NEG = -np.inf


def test_attention_mask_positions_causal_and_window():
    q, k = np.zeros((1, 2, 3)), np.zeros((1, 4, 3))     # T=2 queries at positions 2, 3
    assert (ref_attention_mask(q, k) == 0).all()
    np.testing.assert_array_equal(ref_attention_mask(q, k, causal=True),
                                  [[0, 0, 0, NEG], [0, 0, 0, 0]])
    np.testing.assert_array_equal(ref_attention_mask(q, k, causal=True, window=2),
                                  [[NEG, 0, 0, NEG], [NEG, NEG, 0, 0]])
    # not causal: |i - j| < window
    np.testing.assert_array_equal(ref_attention_mask(k, k, window=2)[1], [0, 0, 0, NEG])
    assert ref_attention_mask(q.astype(np.float32), k).dtype == np.float32


def test_padding_mask_shape_and_values():
    m = np.array([[1, 0, 1], [0, 0, 0]])
    out = ref_padding_mask(m)
    assert out.shape == (2, 1, 1, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0, 0], [[0, NEG, 0], [NEG, NEG, NEG]])


def test_matmul_transpose_b():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    np.testing.assert_allclose(ref_matmul(a, b, transpose_b=True), a @ b.swapaxes(-1, -2))


def test_compiled_executor_runs_unfused_masks_and_transpose_b(arch_file):
    # the extra `probs` output keeps the softmax from fusing, so the executor runs
    # matmul(transpose_b), attention_mask and padding_mask itself
    g = lower(arch_file("""
        model m(q: float[B, T, 8], k: float[B, T, 8], v: float[B, T, 8], mask: int[B, T]) {
            s = q @ transpose(k) + attention_mask(q, k, causal=true)
            p = softmax(s + reshape(padding_mask(mask), [B, 1, T]))
            return out = p @ v, probs = p
        }
    """))
    rng = np.random.default_rng(1)
    inputs = {n: rng.standard_normal((2, 5, 8)).astype(np.float32) for n in "qkv"}
    inputs["mask"] = np.array([[1, 1, 1, 0, 1], [0, 1, 1, 1, 1]])
    ex = executor(g, {})
    assert any(n.op == "matmul" and n.attrs.get("transpose_b") for n in ex.graph.nodes())
    got = ex.run(inputs)
    want = run_reference(g, inputs, {})
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
