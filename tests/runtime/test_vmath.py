"""The vectorisable float32 math of runtime/kernels/_vmath.py against float64 NumPy, on a
dense grid: the accuracy its docstring states."""
import numpy as np
import pytest
from numba import njit

from archc.runtime.kernels import elementwise as ke
from archc.runtime.kernels._vmath import exp_

GRID = np.concatenate([np.linspace(-90, 90, 400_001), np.linspace(-4, 4, 100_001)]
                      ).astype(np.float32)


@njit(error_model="numpy")
def _exp_all(out, x):
    for i in range(x.shape[0]):
        out[i] = exp_(x[i])


def test_exp_one_ulp_in_range_and_saturating_outside():
    out = np.empty_like(GRID)
    _exp_all(out, GRID)
    inside = (GRID >= -87) & (GRID <= 88)
    want = np.exp(GRID[inside].astype(np.float64)).astype(np.float32)
    ulps = np.abs(out[inside] - want) / np.spacing(want)
    assert ulps.max() <= 1.0
    assert (out[GRID < -87] == 0).all()
    assert np.isfinite(out).all() and out[GRID > 88].min() == out[GRID > 88].max()
    odd = np.array([np.nan, -np.inf, np.inf], np.float32)
    got = np.empty_like(odd)
    _exp_all(got, odd)
    assert np.isnan(got[0]) and got[1] == 0 and np.isfinite(got[2])


@pytest.mark.parametrize("act,atol,ulp", [("sigmoid", 0, 2), ("silu", 6e-7, None),
                                          ("gelu_tanh", 6e-7, None), ("gelu", 6e-7, None)])
def test_activations_on_a_dense_grid(act, atol, ulp):
    out = np.empty_like(GRID)
    ke.activation(out, GRID, ke.ACT[act])
    want = getattr(ke, f"ref_{act}")(GRID.astype(np.float64))
    if ulp is not None:
        w32 = want.astype(np.float32)
        assert (np.abs(out - w32) / np.spacing(np.maximum(w32, 1e-30))).max() <= ulp
    else:                 # absolute, plus the float32 rounding of large results
        assert (np.abs(out - want) <= atol + 2 * np.spacing(np.abs(want).astype(np.float32))).all()
    nan = np.full(3, np.nan, np.float32)
    ke.activation(nan, nan.copy(), ke.ACT[act])
    assert np.isnan(nan).all()
