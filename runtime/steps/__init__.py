"""Op -> steps: how the compiled executor runs each op, as prebuilt calls on fixed arrays.

A builder `build_<op>(P, node, args, attrs)` gets the Program being built
(runtime/executor.py), the node, its argument arrays and its attributes (sizes resolved),
adds steps with `P.step(fn, *arrays)`, and returns the node's value: a buffer from
`P.output()`, a view of an argument (reshape, transpose, split: no step at all), or a
tuple of either. Scratch comes from `P.temp(tag, shape, dtype)`, as the op's scratch rule
declared it (dsl/scratch.py). For a case it does not compile a builder returns
`fallback(why)`: the op then runs on its `ref_` kernel (correct, but it allocates), which
the executor says once on stderr, lists in `Program.fallbacks` and marks "(ref)" in
profiles: never silently.

The builders live by family, one file each as in runtime/kernels/; adding a family is
adding a file (`load_all`). Row-wise kernels see 2-D (rows, C) views, flat kernels 1-D
views; non-contiguous inputs are copied into scratch first (`P.contiguous`), so each Numba
kernel compiles once per dtype. Matrix products go to BLAS through np.dot/np.matmul with
`out=`, or to archc's own kernels where those win (linalg.py).
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from typing import Callable, NamedTuple

import numpy as np

from ..kernels import REFERENCE
from ..reference import ExecutionError

STEPS: dict[str, Callable] = {}


class Fallback(NamedTuple):
    """A builder's answer for a case it does not compile: the op runs on its reference."""
    reason: str


def fallback(reason: str) -> Fallback:
    return Fallback(reason)


def steps_for(*ops: str):
    def register(fn):
        for op in ops:
            STEPS[op] = fn
        return fn
    return register


def rows(a: np.ndarray) -> np.ndarray:
    # the row count is explicit: reshape(-1, 0) cannot infer it for a zero-width tensor
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1]) if a.ndim != 2 else a


def zeros(n: int, dtype) -> np.ndarray:
    return np.zeros(n, dtype)


def view_as(a: np.ndarray, shape) -> np.ndarray | None:
    """`a` reshaped without copying, or None when that would need a copy."""
    v = a.view()
    try:
        v.shape = tuple(shape)
    except AttributeError:
        return None
    return v


def heads_view(P, x, H, tag):
    """x (..., T, H*D) as (..., T, H, D) without a copy when possible."""
    shape = x.shape[:-1] + (H, x.shape[-1] // H)
    v = view_as(x, shape)
    return v if v is not None else P.contiguous(x, tag).reshape(shape)


# ---- everything else: the reference kernel ---------------------------------------------------

def build_reference(P, node, args, attrs):
    fn = REFERENCE.get(node.op)
    if fn is None:
        raise ExecutionError(f"no kernel for op {node.op!r} ({node.id})")
    if node.dtype == "tuple":
        outs = tuple(P.output(i) for i in range(len(node.parts)))

        def run_tuple():
            for o, r in zip(outs, fn(*args, **attrs)):
                np.copyto(o, r, casting="unsafe")
        P.step(run_tuple, op=f"{node.op} (ref)")
        return outs
    out = P.output()
    P.step(lambda: np.copyto(out, fn(*args, **attrs), casting="unsafe"),
           op=f"{node.op} (ref)")
    return out


def load_all() -> None:
    """Import every family file in this package: adding a family is adding a file."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


load_all()
