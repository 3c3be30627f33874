"""Dropout (NumPy reference). The executor passes `rng` only in training mode."""
from __future__ import annotations

import numpy as np


def ref_dropout(x, rate=0.0, rng=None):
    if rng is None or rate == 0:
        return x                                  # inference: the identity
    keep = rng.random(x.shape) >= rate
    # inverted dropout: scale survivors so the expected value is unchanged
    return np.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
