"""Additive score masks (NumPy references): 0 where a key is visible, -inf where not."""
from __future__ import annotations

import numpy as np

from .attention import visible


def ref_attention_mask(q, k, causal=False, window=None):
    # (T, S); query i sits at absolute position S - T + i, as in ref_attention
    T, S = q.shape[-2], k.shape[-2]
    ok = visible(T, S, causal, window)
    dtype = q.dtype if q.dtype.kind == "f" else np.float32
    return np.where(ok, 0.0, -np.inf).astype(dtype)


def ref_padding_mask(mask, dtype="float32"):
    # (..., S) -> (..., 1, 1, S)
    ok = np.asarray(mask) != 0
    return np.where(ok, 0.0, -np.inf).astype(dtype)[..., None, None, :]
