"""Matrix products (NumPy references)."""
from __future__ import annotations

import numpy as np


def ref_matmul(a, b, transpose_b=False):
    return np.matmul(a, np.swapaxes(b, -1, -2) if transpose_b else b)


def ref_linear(x, weight, bias=None):
    # x: (..., in), weight: (in, out), bias: (out,)
    y = np.matmul(x, weight)
    return y if bias is None else y + bias
