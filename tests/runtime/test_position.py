"""ref_rope, ref_sinusoidal_positions, ref_positions and ref_dropout vs hand formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest

from archc.runtime.kernels.dropout import ref_dropout
from archc.runtime.kernels.position import ref_positions, ref_rope, ref_sinusoidal_positions


def test_positions():
    assert ref_positions(np.zeros((2, 4)), offset=3).tolist() == [3, 4, 5, 6]


def test_sinusoidal_by_hand():
    pe = ref_sinusoidal_positions(np.array([0, 1, 2]), dim=4)
    p = 2
    want = [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]
    np.testing.assert_allclose(pe[2], want, rtol=1e-6)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1])


def rotate(x, angle, i, j):
    c, s = math.cos(angle), math.sin(angle)
    y = x.copy()
    y[i], y[j] = x[i] * c - x[j] * s, x[j] * c + x[i] * s
    return y


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_one_head_by_hand(interleaved):
    x = np.arange(1.0, 9.0)                         # one head, D = 8, rotary_dim 4
    out = ref_rope(x.reshape(1, 1, 8), heads=1, rotary_dim=4, theta=100.0, offset=3,
                   interleaved=interleaved)[0, 0]
    pairs = [(0, 1), (2, 3)] if interleaved else [(0, 2), (1, 3)]
    want = x.copy()
    for k, (i, j) in enumerate(pairs):
        want = rotate(want, 3 * 100.0 ** (-2 * k / 4), i, j)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert np.all(out[4:] == x[4:])                  # beyond rotary_dim: untouched


def test_rope_positions_tensor_equals_offset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8))
    pos = np.array([[5, 6, 7], [5, 6, 7]])
    np.testing.assert_allclose(ref_rope(x, pos, heads=2), ref_rope(x, heads=2, offset=5))
    # relative property: <rope(q, m), rope(k, n)> depends on m - n only (per head)
    q, k = rng.normal(size=(1, 1, 4)), rng.normal(size=(1, 1, 4))
    a = ref_rope(q, heads=1, offset=7)[0, 0] @ ref_rope(k, heads=1, offset=4)[0, 0]
    b = ref_rope(q, heads=1, offset=13)[0, 0] @ ref_rope(k, heads=1, offset=10)[0, 0]
    assert a == pytest.approx(b)


def test_dropout_identity_then_inverted_and_deterministic():
    x = np.ones((200, 50), dtype=np.float32)
    assert ref_dropout(x, rate=0.5) is x
    y = ref_dropout(x, 0.25, np.random.default_rng(1))
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(y, ref_dropout(x, 0.25, np.random.default_rng(1)))
