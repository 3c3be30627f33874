"""Ops that move data without arithmetic: reshape, transpose, concat, split, slicing."""
from __future__ import annotations

import numpy as np

from ..dims import DimLike, Dim, dim_div, dim_sub, numel, shape_str
from . import TT, ShapeError, dim_sum, norm_axis, op


@op("reshape", inputs=("x",), attrs={"shape": None},
    traits={"shape": True, "view": "contiguous", "keeps_tokens": True, "keeps_mask": True},
    fold=lambda x, shape: np.reshape(x, tuple(shape)))
def reshape(x: TT, shape) -> TT:
    """reshape(x, [d0, d1, ...]); one entry may be -1 (inferred)"""
    if shape is None:
        raise ShapeError("reshape needs a target shape, e.g. reshape(x, [B, T, H, D])")
    dims = list(shape)
    unknown = [i for i, d in enumerate(dims) if isinstance(d, int) and d == -1]
    if len(unknown) > 1:
        raise ShapeError("reshape: at most one dimension may be -1")
    if any(isinstance(d, int) and d < -1 for d in dims):
        raise ShapeError(f"reshape: negative size in {shape_str(dims)}")
    known = numel([d for i, d in enumerate(dims) if i not in unknown])
    total = numel(x.shape)
    if unknown:
        rest = dim_div(total, known)
        if rest is None:
            raise ShapeError(f"reshape: cannot infer -1 in {shape_str(dims)} from "
                             f"{shape_str(x.shape)} ({total} elements)", arg=0)
        dims[unknown[0]] = rest
    elif known != total:
        raise ShapeError(f"reshape: {shape_str(x.shape)} has {total} elements but "
                         f"{shape_str(dims)} has {known}", arg=0)
    return TT(tuple(dims), x.dtype)


@op("transpose", inputs=("x",), attrs={"perm": None}, traits=("shape", "view"),
    fold=lambda x, perm=None: np.swapaxes(x, -1, -2) if perm is None
    else np.transpose(x, tuple(perm)))
def transpose(x: TT, perm=None) -> TT:
    """transpose(x, perm?): permute axes; without perm, swap the last two"""
    rank = len(x.shape)
    if perm is None:
        if rank < 2:
            raise ShapeError(f"transpose needs rank >= 2, got {shape_str(x.shape)}", arg=0)
        perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    perm = [norm_axis(p, rank) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"transpose: {list(perm)} is not a permutation of {rank} axes", arg=0)
    return TT(tuple(x.shape[p] for p in perm), x.dtype)


@op("concat", inputs=("*xs",), attrs={"axis": -1}, traits=("shape",))
def concat(*xs, axis: int = -1) -> TT:
    """concat(a, b, ..., axis=-1)"""
    if not xs:
        raise ShapeError("concat needs at least one tensor")
    rank = len(xs[0].shape)
    ax = norm_axis(axis, rank)
    for i, t in enumerate(xs[1:], 1):
        if len(t.shape) != rank or any(a != b for k, (a, b) in enumerate(zip(t.shape, xs[0].shape))
                                       if k != ax):
            raise ShapeError(f"concat along axis {axis}: {shape_str(t.shape)} does not match "
                             f"{shape_str(xs[0].shape)} outside that axis", arg=i)
        if t.dtype != xs[0].dtype:
            raise ShapeError(f"concat: dtypes differ ({xs[0]} and {t})", arg=i)
    shape = list(xs[0].shape)
    shape[ax] = dim_sum(t.shape[ax] for t in xs)
    return TT(tuple(shape), xs[0].dtype)


def _split_sizes(dim: DimLike, sections) -> list[DimLike]:
    if isinstance(sections, int):
        if sections <= 0:
            raise ShapeError(f"split: number of sections must be positive, got {sections}")
        size = dim_div(dim, sections)
        if size is None:
            raise ShapeError(f"split: dimension {dim} does not divide into {sections} equal parts",
                             arg=0)
        return [size] * sections
    sizes = list(sections)
    if dim_sum(sizes) != dim:
        raise ShapeError(f"split: sizes {sizes} add up to {dim_sum(sizes)}, not {dim}", arg=0)
    return sizes


@op("split", inputs=("x",), attrs={"sections": 2, "axis": -1},
    traits=("shape", "view", "keeps_tokens"))
def split(x: TT, sections=2, axis: int = -1):
    """split(x, sections, axis=-1): sections is a count (equal parts) or a list of sizes"""
    ax = norm_axis(axis, len(x.shape))
    parts = []
    for size in _split_sizes(x.shape[ax], sections):
        shape = list(x.shape)
        shape[ax] = size
        parts.append(TT(tuple(shape), x.dtype))
    return tuple(parts)


@op("getitem", inputs=("x",), attrs={"index": 0},
    traits={"shape": True, "per_position": (0,), "keeps_tokens": True})
def getitem(x, index: int = 0) -> TT:
    """getitem(t, index): one output of a multi-output op (made by `a, b = split(...)`)"""
    raise ShapeError("getitem is resolved by the builder")  # the builder types it from parts


@op("slice", inputs=("x",), attrs={"axis": 0, "start": 0, "stop": None, "step": 1},
    traits=("shape", "view"))
def slice_(x: TT, axis: int = 0, start=0, stop=None, step: int = 1) -> TT:
    """slice(x, axis, start, stop, step=1) = x[..., start:stop:step, ...] along axis"""
    ax = norm_axis(axis, len(x.shape))
    dim = x.shape[ax]
    if step != 1 and not isinstance(dim, int):
        raise ShapeError("slice: a step other than 1 needs a concrete dimension", arg=0)
    if isinstance(dim, int):
        length = len(range(*slice(start, stop, step).indices(dim)))
    else:
        length = _symbolic_slice_len(dim, start, stop)
    shape = list(x.shape)
    shape[ax] = length
    return TT(tuple(shape), x.dtype)


def _symbolic_slice_len(dim: Dim, start, stop) -> DimLike:
    if start is None:
        start = 0
    if isinstance(start, int) and start < 0 and stop is None:
        return -start  # the last -start positions; assumes dim >= -start
    if not isinstance(start, int) or start < 0:
        raise ShapeError(f"slice of symbolic dimension {dim} needs a non-negative int start "
                         "(or a negative one to the end)")
    if stop is None:
        return dim_sub(dim, start)
    if isinstance(stop, int) and stop >= 0:
        return stop - start  # assumes dim >= stop; checked at run time
    if isinstance(stop, int):
        return dim_sub(dim_sub(dim, start), -stop)
    return dim_sub(stop, start)


@op("take", inputs=("x",), attrs={"index": 0, "axis": 0}, traits=("shape", "view"))
def take(x: TT, index: int = 0, axis: int = 0) -> TT:
    """take(x, index, axis): one position along an axis, removing that axis (x[:, 0] etc.)"""
    ax = norm_axis(axis, len(x.shape))
    dim = x.shape[ax]
    if isinstance(dim, int) and not -dim <= index < dim:
        raise ShapeError(f"take: index {index} is out of range for dimension {dim}", arg=0)
    return TT(tuple(d for k, d in enumerate(x.shape) if k != ax), x.dtype)


@op("stack", inputs=("*xs",), attrs={"axis": 0}, traits=("shape", "mixes_positions"))
def stack(*xs, axis: int = 0) -> TT:
    """stack(a, b, ..., axis=0): join equal-shaped tensors along a new axis"""
    if not xs:
        raise ShapeError("stack needs at least one tensor")
    ax = norm_axis(axis, len(xs[0].shape) + 1)
    for i, t in enumerate(xs[1:], 1):
        if tuple(t.shape) != tuple(xs[0].shape) or t.dtype != xs[0].dtype:
            raise ShapeError(f"stack: {t} differs from {xs[0]}; stacked tensors must match",
                             arg=i)
    shape = list(xs[0].shape)
    shape.insert(ax, len(xs))
    return TT(tuple(shape), xs[0].dtype)
