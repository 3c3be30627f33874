"""Feed-forward kernels: linear + activation, gated linear units, whole FFN blocks
(NumPy references of the fused ops in dsl/ops/fused.py)."""
from __future__ import annotations

from .elementwise import apply_activation
from .linalg import ref_linear


def ref_linear_act(x, weight, bias=None, act="relu"):
    # x: (..., in), weight: (in, out) -> (..., out)
    return apply_activation(act, ref_linear(x, weight, bias))


def ref_linear_glu(x, weight, bias=None, act="silu"):
    # weight: (in, 2F) = [gate | up]; out (..., F) = act(gate) * up
    h = ref_linear(x, weight, bias)
    f = weight.shape[1] // 2
    return apply_activation(act, h[..., :f]) * h[..., f:]


def ref_ffn(x, w1, w2, *biases, act="relu", glu=False, bias1=False, bias2=False):
    b1 = biases[0] if bias1 else None
    b2 = biases[-1] if bias2 else None
    h = ref_linear_glu(x, w1, b1, act) if glu else ref_linear_act(x, w1, b1, act)
    return ref_linear(h, w2, b2)


# ---- compiled kernels (Numba) ------------------------------------------------------------
# The matrix products go to BLAS (np.dot from Python); what is left is the epilogue:
# bias + activation (elementwise.bias_act) or, for the gated units, this.

from ..jit import njit, prange  # noqa: E402
from .elementwise import FMA, _act_row  # noqa: E402


@njit(cache=True, parallel=True, nogil=True, error_model="numpy", fastmath=FMA)
def glu_merged(out, h, kind):
    # out: (N, F)  h: (N, 2F) = [gate | up] -> out = act(gate) * up
    n, f = out.shape
    for i in prange(n):
        o, up = out[i], h[i, f:]
        _act_row(o, h[i, :f], kind)
        for j in range(f):
            o[j] *= up[j]


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FMA)
def glu_cols(out, h, kind, c0, c1):
    # glu_merged over output columns c0:c1 only (one lane's share): gate columns c0:c1 of
    # h, up columns F+c0:F+c1
    f = out.shape[1]
    for i in range(out.shape[0]):
        o = out[i][c0:c1]
        _act_row(o, h[i][c0:c1], kind)
        up = h[i][f + c0:f + c1]
        for j in range(o.shape[0]):
            o[j] *= up[j]
