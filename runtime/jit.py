"""Numba set-up: where compiled kernels are cached on disk, and how many threads run them.

Import Numba through this module (`from ..jit import njit, prange`): its `njit` is
Numba's, except that `cache=True` kernels are cached through runtime/kernel_cache.py, in
a directory only the user can write (checked like ~/.ssh), healed when an entry is broken,
and never beside the sources:

    ARCHC_CACHE_DIR=/path  ->  /path/numba
    otherwise              ->  $XDG_CACHE_HOME/archc/numba  (default ~/.cache/archc/numba)
    (the root is dsl/cache.py's cache_root(), which also holds the parser tables)

Only the compiled executor and the kernel families import this; `archc check` and
`archc dump` never do, so they never pay for importing Numba.

Threads: Numba's `prange` kernels and BLAS (matrix products) run one after the other,
never nested; no kernel calls BLAS from inside (see kernels/moe.py). `set_threads(n)`
sets both: Numba's pool and every OpenBLAS loaded in the process. Both pools spin after a call,
so a program does not mix them: see `numba_threads` (prefill: BLAS gets the cores; decode:
no BLAS, Numba gets them). With more than one thread, a program's products and attention
run in lanes (runtime/lanes.py): one-thread BLAS calls side by side, one per core, so
OpenBLAS's own pool is not used at all.
"""
from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import numba
from numba import prange  # noqa: F401

from .kernel_cache import kernel_dir, use_safe_cache


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where there is none): which kernels
    the machine's vector units suit."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cache_dir() -> Path:
    """Where this process caches its kernels."""
    return kernel_dir()


def njit(*args, **options):
    """numba.njit, as `@njit`, `@njit(**options)` or `njit(signature, **options)`; with
    cache=True the kernel goes through the checked cache (runtime/kernel_cache.py)."""
    cache = options.pop("cache", False)

    def finish(dispatcher):
        if cache:
            use_safe_cache(dispatcher)
        return dispatcher

    if len(args) == 1 and callable(args[0]) and not options:
        return finish(numba.njit(args[0]))
    decorate = numba.njit(*args, **options)
    return lambda fn: finish(decorate(fn))

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


_blas_setters: list | None = None
_blas_threads: int | None = None      # what set_blas_threads last set (None: never)


def _setters() -> list:
    global _blas_setters
    if _blas_setters is None:
        found = []
        for lib in _blas_libraries():
            for name in _BLAS_SETTERS:
                fn = getattr(lib, name, None)
                if fn is not None:
                    found.append(fn)
                    break
        _blas_setters = found
    return _blas_setters


def set_blas_threads(n: int) -> int:
    """Set the thread count of every OpenBLAS loaded (NumPy's, at least); returns how many
    libraries were set. The libraries are looked up once."""
    global _blas_threads
    setters = _setters()
    for fn in setters:
        fn(ctypes.c_int(n))
    _blas_threads = n
    return len(setters)


def max_threads() -> int:
    return numba.config.NUMBA_NUM_THREADS


def set_threads(n: int | None) -> int:
    """Use `n` threads for Numba kernels and BLAS (None: the cores no other process is
    busy on, see free_cores). Returns n."""
    n = free_cores() if n is None else max(1, min(int(n), max_threads()))
    numba.set_num_threads(n)
    set_blas_threads(n)
    return n


def _running() -> int | None:
    """Runnable tasks on the machine now (/proc/loadavg's fourth field), this one included."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def free_cores(samples: int = 5, gap: float = 0.002) -> int:
    """Cores not taken by other processes: every core less the other runnable tasks, the
    least of a few looks ~2 ms apart (a task that only wakes briefly is not a load). A
    parallel kernel waits for its slowest thread, so a thread on a core another process
    holds makes it slower than one thread alone (decode: 10x on two busy cores).
    ARCHC_THREADS_FREE=0 takes every core regardless."""
    cores = max_threads()
    if cores == 1 or os.environ.get("ARCHC_THREADS_FREE", "1") == "0":
        return cores
    seen = []
    for i in range(samples):
        r = _running()
        if r is None:
            return cores
        seen.append(r)
        if i + 1 < samples:
            time.sleep(gap)
    others = max(0, min(seen) - 1)
    return max(1, min(cores, cores - others))


class Pacer:
    """How many Numba threads a program that runs again and again (a decode step) uses,
    chosen by timing: all of them, or one. Another process taking a core makes every
    parallel kernel wait for its descheduled thread, so the choice made at start can turn
    wrong mid-run; the pacer times each run, tries the other choice now and then (at
    growing intervals while the current one stays faster, so a quiet machine pays ~1%),
    and keeps the faster. ARCHC_PACE=0 keeps `full` always."""

    WARMUP = 2          # first runs are slower anyway (page faults, caches)
    FIRST_PROBE = 4     # runs between probes at first, and after a switch
    MAX_GAP = 64

    def __init__(self, full: int):
        self.choices = (full, 1)
        self.current = full
        self.enabled = full > 1 and os.environ.get("ARCHC_PACE", "1") != "0"
        self.ema: dict[int, float] = {}
        self.runs = 0
        self.gap = self.FIRST_PROBE
        self.next_probe = self.WARMUP + self.FIRST_PROBE

    def threads(self) -> int:
        """The thread count for the next run."""
        if self.enabled and self.runs == self.next_probe:
            return self.choices[1] if self.current == self.choices[0] else self.choices[0]
        return self.current

    def record(self, threads: int, seconds: float) -> None:
        """The run just made, with `threads`, took `seconds`."""
        self.runs += 1
        if not self.enabled or self.runs <= self.WARMUP:
            return
        if threads == self.current:
            old = self.ema.get(threads)
            self.ema[threads] = seconds if old is None else 0.7 * old + 0.3 * seconds
            return
        self.ema[threads] = seconds      # a probe measures the other choice afresh
        # a probe: switch if the other choice was faster, and probe again soon
        if self.ema[threads] < self.ema.get(self.current, float("inf")):
            self.current, self.gap = threads, self.FIRST_PROBE
        else:
            self.gap = min(self.gap * 2, self.MAX_GAP)
        self.next_probe = self.runs + self.gap


def lanes_enabled() -> bool:
    """Multi-threaded programs cut their heavy steps into lanes (runtime/lanes.py) unless
    ARCHC_LANES=0 (then OpenBLAS threads its own products, as before lanes existed)."""
    return os.environ.get("ARCHC_LANES", "1") != "0"


def numba_threads(threads: int, uses_blas: bool) -> int:
    """Numba threads for a program that runs on `threads` cores. OpenBLAS's workers spin
    after each product and Numba's OpenMP workers after each kernel; with both pools on
    the same two cores each waits out the other's spinning (a decode step that mixed them
    took 5 ms per kernel call). So a program that calls BLAS runs its Numba kernels on one
    thread (BLAS, or the lanes, get every core), and one that does not gets every core for
    Numba."""
    policy = os.environ.get("ARCHC_MIXED_THREADS", "blas")
    return 1 if uses_blas and policy == "blas" else threads


class thread_pools:
    """`with thread_pools(numba=n, blas=m):` Numba kernels called inside use n threads and
    BLAS m (both restored after). With lanes, BLAS always runs one thread per lane."""

    def __init__(self, numba: int, blas: int):
        self.n, self.blas = numba, blas

    def __enter__(self):
        self.prev = numba.get_num_threads()
        if self.n != self.prev:
            numba.set_num_threads(self.n)
        self.prev_blas = _blas_threads
        if self.blas != self.prev_blas:
            set_blas_threads(self.blas)

    def __exit__(self, *exc):
        if self.n != self.prev:
            numba.set_num_threads(self.prev)
        if self.prev_blas is not None and self.blas != self.prev_blas:
            set_blas_threads(self.prev_blas)
