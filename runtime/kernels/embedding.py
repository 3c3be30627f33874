"""Table lookups (NumPy references)."""
from __future__ import annotations

import numpy as np


def ref_embedding(ids, table):
    # ids: (...), table: (vocab, dim) -> (..., dim); ids were range-checked at the input
    return np.take(table, ids, axis=0)


# ---- compiled kernels (Numba) ------------------------------------------------------------

from ..jit import njit, prange  # noqa: E402


@njit(cache=True, parallel=True)
def embedding(out, ids, table):
    # out: (N, C)  ids: (N,)  table: (V, C); returns how many ids fall outside 0..V-1
    # (those rows are left as they were: the caller raises)
    V, C = table.shape
    bad = 0
    for n in prange(ids.shape[0]):
        t = ids[n]
        if t < 0 or t >= V:
            bad += 1
        else:
            for c in range(C):
                out[n, c] = table[t, c]
    return bad
