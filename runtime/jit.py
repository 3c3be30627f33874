"""Numba set-up: where compiled kernels are cached on disk, and how many threads run them.

Import Numba through this module (`from ..jit import njit, prange`): it points Numba's
on-disk cache at a user cache directory *before* Numba is imported, so `cache=True`
kernels are compiled once per machine instead of being written next to the sources.

    ARCHC_CACHE_DIR=/path  ->  /path/numba
    otherwise              ->  $XDG_CACHE_HOME/archc/numba  (default ~/.cache/archc/numba)
    (the root is dsl/cache.py's cache_root(), which also holds the parser tables)

Only the compiled executor and the kernel families import this; `archc check` and
`archc dump` never do, so they never pay for importing Numba.

Threads: Numba's `prange` kernels and BLAS (matrix products) run one after the other,
never nested; no kernel calls BLAS from inside (see kernels/moe.py). `set_threads(n)`
sets both: Numba's pool and every OpenBLAS loaded in the process. Both pools spin after a call,
so a program does not mix them: see `numba_threads` (prefill: BLAS gets the cores; decode:
no BLAS, Numba gets them).
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..dsl.cache import cache_root


def cache_dir() -> Path:
    return cache_root() / "numba"


if "ARCHC_CACHE_DIR" in os.environ or "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir())

import numba  # noqa: E402  (after the cache directory is set)
from numba import njit, prange  # noqa: E402,F401

# OpenBLAS builds name their thread setter differently (plain, scipy's, 64-bit-int)
_BLAS_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads",
                 "scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_")


def _blas_libraries() -> list[ctypes.CDLL]:
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return []
    libs = []
    for p in sorted(paths):
        if p.endswith(".so") or ".so." in p:
            try:
                libs.append(ctypes.CDLL(p))
            except OSError:
                pass
    return libs


def set_blas_threads(n: int) -> int:
    """Set the thread count of every OpenBLAS loaded so far; returns how many were set."""
    done = 0
    for lib in _blas_libraries():
        for name in _BLAS_SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done += 1
                break
    return done


def max_threads() -> int:
    return numba.config.NUMBA_NUM_THREADS


def set_threads(n: int | None) -> int:
    """Use `n` threads for Numba kernels and BLAS (None: every core). Returns n."""
    n = max_threads() if n is None else max(1, min(int(n), max_threads()))
    numba.set_num_threads(n)
    set_blas_threads(n)
    return n


def numba_threads(threads: int, uses_blas: bool) -> int:
    """Numba threads for a program that runs on `threads` cores. OpenBLAS's workers spin
    after each product and Numba's OpenMP workers after each kernel; with both pools on
    the same two cores each waits out the other's spinning (a decode step that mixed them
    took 5 ms per kernel call). So a program that calls BLAS runs its Numba kernels on one
    thread (BLAS gets every core), and one that does not gets every core for Numba."""
    policy = os.environ.get("ARCHC_MIXED_THREADS", "blas")
    return 1 if uses_blas and policy == "blas" else threads


class numba_pool:
    """`with numba_pool(n):` Numba kernels called inside use n threads."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.prev = numba.get_num_threads()
        if self.n != self.prev:
            numba.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n != self.prev:
            numba.set_num_threads(self.prev)
