"""Data movement (NumPy references)."""
from __future__ import annotations

import numpy as np


def ref_reshape(x, shape):
    return np.reshape(x, tuple(shape))


def ref_transpose(x, perm=None):
    if perm is None:
        return np.swapaxes(x, -1, -2)
    return np.transpose(x, tuple(perm))


def ref_concat(*xs, axis=-1):
    return np.concatenate(xs, axis=axis)


def ref_split(x, sections=2, axis=-1):
    if isinstance(sections, int):
        return tuple(np.split(x, sections, axis=axis))
    cuts = np.cumsum(sections)[:-1]
    return tuple(np.split(x, cuts, axis=axis))


def ref_getitem(x, index=0):
    return x[index]


def ref_slice(x, axis=0, start=0, stop=None, step=1):
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(start, stop, step)
    return x[tuple(idx)]


def ref_take(x, index=0, axis=0):
    return np.take(x, index, axis=axis)


def ref_stack(*xs, axis=0):
    return np.stack(xs, axis=axis)
