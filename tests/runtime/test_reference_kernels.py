"""The NumPy references of the foundation ops, against independent formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest

from archc.dsl.ops import OPS
from archc.runtime.kernels import REFERENCE
from archc.runtime.kernels import elementwise as ew
from archc.runtime.kernels import linalg, norm, shape

rng = np.random.default_rng(0)


def test_every_op_has_a_reference():
    assert sorted(set(OPS) - set(REFERENCE)) == []


def test_activations_match_scalar_formulas():
    x = np.array([-30.0, -3.0, -0.5, 0.0, 0.7, 2.0, 30.0], dtype=np.float32)
    for fn, scalar in [
        (ew.ref_relu, lambda v: max(v, 0.0)),
        (ew.ref_gelu, lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
        (ew.ref_gelu_tanh, lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi)
                                                              * (v + 0.044715 * v ** 3)))),
        (ew.ref_sigmoid, lambda v: 1 / (1 + math.exp(-v))),
        (ew.ref_silu, lambda v: v / (1 + math.exp(-v))),
    ]:
        got = fn(x)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, [scalar(float(v)) for v in x], rtol=1e-6, atol=1e-7)


def test_sigmoid_never_overflows():
    with np.errstate(over="raise"):
        out = ew.ref_sigmoid(np.array([-1e4, 1e4], dtype=np.float32))
    np.testing.assert_array_equal(out, [0.0, 1.0])


@pytest.mark.parametrize("shape_", [(1, 3), (2, 5, 7), (4, 1)])
def test_layernorm_and_rmsnorm(shape_):
    x = rng.standard_normal(shape_).astype(np.float32) * 3 + 1
    w = rng.standard_normal(shape_[-1]).astype(np.float32)
    b = rng.standard_normal(shape_[-1]).astype(np.float32)
    for row_in, row_out in zip(x.reshape(-1, shape_[-1]),
                               norm.ref_layernorm(x, w, b, eps=1e-5).reshape(-1, shape_[-1])):
        mu = sum(row_in.tolist()) / len(row_in)
        var = sum((v - mu) ** 2 for v in row_in.tolist()) / len(row_in)
        want = [(v - mu) / math.sqrt(var + 1e-5) * wi + bi for v, wi, bi in zip(row_in, w, b)]
        np.testing.assert_allclose(row_out, want, rtol=1e-5, atol=1e-5)
    for row_in, row_out in zip(x.reshape(-1, shape_[-1]),
                               norm.ref_rmsnorm(x, w, eps=1e-6).reshape(-1, shape_[-1])):
        rms = math.sqrt(sum(v * v for v in row_in.tolist()) / len(row_in) + 1e-6)
        np.testing.assert_allclose(row_out, [v / rms * wi for v, wi in zip(row_in, w)],
                                   rtol=1e-5, atol=1e-6)


def test_softmax_rows_sum_to_one_and_extremes_stay_finite():
    x = np.array([[1e4, -1e4, 0.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    p = norm.ref_softmax(x)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    e = np.exp(np.array([1.0, 2.0, 3.0]) - 3.0)
    np.testing.assert_allclose(p[1], e / e.sum(), rtol=1e-6)
    # a fully masked row is defined as all zeros, not NaN
    np.testing.assert_array_equal(norm.ref_softmax(np.full((1, 3), -np.inf, np.float32)), 0.0)


def test_linear_and_matmul():
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    want = np.einsum("btc,cd->btd", x, w) + b
    np.testing.assert_allclose(linalg.ref_linear(x, w, b), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(linalg.ref_matmul(x, w), want - b, rtol=1e-5, atol=1e-6)


def test_shape_ops():
    x = np.arange(24).reshape(2, 3, 4)
    assert shape.ref_transpose(x).shape == (2, 4, 3)
    assert shape.ref_transpose(x, perm=[2, 0, 1]).shape == (4, 2, 3)
    a, b = shape.ref_split(x, sections=[1, 3], axis=-1)
    assert a.shape == (2, 3, 1) and b.shape == (2, 3, 3)
    np.testing.assert_array_equal(shape.ref_concat(a, b, axis=-1), x)
    np.testing.assert_array_equal(shape.ref_take(x, index=0, axis=1), x[:, 0])
    np.testing.assert_array_equal(shape.ref_slice(x, axis=2, start=1, stop=3), x[:, :, 1:3])
