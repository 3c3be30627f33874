"""Kernels chosen by measurement on the machine at hand, not by constants tuned on another.

The fastest way to compute a prompt's product y = x @ W depends on the CPU: with 32
vector registers (AVX-512) archc's 4x4-tile kernel beats OpenBLAS; with 16 (AVX2) that
tile spills to ~46 GFLOP/s where a 2x4 or 3x3 tile, or OpenBLAS, runs 65-75. So, as
ATLAS and FFTW keep "wisdom" and oneDNN dispatches by ISA, archc times the candidates for
each product shape the model meets, once per machine, and remembers the winner:

    a product class    dtype, rows M rounded up to a power of two (8..1024), depth K, and
                       the columns one call computes (an item of N: runtime/lanes.py
                       column_items); int8 / bf16 weights
                       are classes of their own ("packed-int8"), their candidates run
                       through kernels/_quant.py's gemm_packed (choose_packed_product)
    candidates         "blas" (NumPy's BLAS, one thread: an item of a lane), and where the
                       weight is stored output-major and the operands are contiguous,
                       archc's own: gemm_nt with each tile (kernels/linalg.py TILES) and,
                       for float32, the register-blocked micro-kernels of
                       kernels/microkernel.py (the AVX-512 one only on CPUs that have it)
    measure            each candidate on the model's own weight and a scratch x, in turns
                       (A B C A B C ...), best of a few, timed by the thread's CPU clock
                       (time.thread_time), so a busy machine's time slicing does not decide
    wisdom             <kernel cache>/tune/<machine>.json: the winner and every candidate's
                       GFLOP/s per class; the machine key is the CPU model, the ISA flags
                       that matter, the core count and the NumPy, Numba and BLAS versions,
                       so another CPU or library tunes afresh

A class is measured when a program first needs it (a second or two for a model, said on
stderr) or up front by `archc tune MODEL.arch`. ARCHC_TUNE=0 measures nothing and uses the
defaults below (what the tests run); a wisdom file that cannot be read is ignored and
rewritten. The wisdom lives in the kernel cache's private directory (runtime/
kernel_cache.py), so nobody else can choose this user's kernels.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ..dsl.cache import replace_atomically
from ..dsl.ops import trait
from .jit import cpu_flags
from .kernels import _quant as k_quant, linalg as k_linalg, microkernel as k_uk
from .packed import kind_of

# archc's own product kernels by name, each fn(y, x, wt, n0, n1): y[:, n0:n1] = x @ wt[n0:n1].T
KERNELS = {**k_linalg.TILES, "uk6x16": k_uk.gemm_uk6x16, "uk12x32": k_uk.gemm_uk12x32}


def own_kernels(dtype) -> dict:
    """archc's kernels that may run a product of this dtype on this CPU."""
    out = dict(k_linalg.TILES)
    if np.dtype(dtype) == np.float32:
        out["uk6x16"] = k_uk.gemm_uk6x16
        if "avx512f" in cpu_flags():
            out["uk12x32"] = k_uk.gemm_uk12x32
    return out

# without measurements: archc's 4x4 tile for a prompt's rows over a weight of modest depth
# on a CPU with 32 vector registers (AVX-512), else BLAS
DEFAULT_ROWS, DEFAULT_DEPTH = 192, 1024
REPEATS = 3               # timed runs of each candidate, in turns; the best counts
MAX_SECONDS = 0.25        # a candidate slower than this in its first run is not repeated


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def machine() -> dict:
    """What decides which kernel wins: the CPU, its vector ISA, its cores, the libraries,
    and the candidates' own code (a changed kernel is measured again)."""
    import numba
    flags = cpu_flags()
    return {"cpu": cpu_model(), "isa": [f for f in ISA if f in flags],
            "cores": os.cpu_count(), "numpy": np.__version__, "numba": numba.__version__,
            "blas": _blas_name(), "kernels": _kernels_digest()}


def _kernels_digest() -> str:
    import hashlib
    h = hashlib.sha256()
    for module in (k_linalg, k_uk):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:12]


def _blas_name() -> str:
    try:
        cfg = np.show_config(mode="dicts")          # NumPy >= 1.26
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '?')}"
    except Exception:  # noqa: BLE001  (an older NumPy: the version stands for its BLAS)
        return "numpy " + np.__version__


def machine_key(m: dict | None = None) -> str:
    import hashlib
    m = machine() if m is None else m
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()[:16]


def enabled() -> bool:
    return os.environ.get("ARCHC_TUNE", "1") not in ("0", "off", "no")


def bucket(rows: int) -> int:
    """Rows rounded up to a power of two in 8..1024: one measurement stands for a range."""
    b = 8
    while b < rows and b < 1024:
        b *= 2
    return b


class Wisdom:
    """The measured winners for this machine, read once and written after each new class."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, dict] = {}
        self.machine: dict = {}
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if isinstance(data, dict) and isinstance(data.get("entries"), dict):
                    self.entries = data["entries"]
            except (OSError, ValueError):
                self.entries = {}              # unreadable: measured again, then rewritten

    def get(self, key: str) -> str | None:
        e = self.entries.get(key)
        return e.get("best") if isinstance(e, dict) else None

    def put(self, key: str, best: str, rates: dict[str, float]) -> None:
        self.entries[key] = {"best": best, "gflops": {k: round(v, 1) for k, v in rates.items()}}
        if self.path is None:
            return
        data = json.dumps({"machine": self.machine or machine(), "entries": self.entries},
                          indent=1, sort_keys=True).encode()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            replace_atomically(self.path, lambda f: f.write(data))
        except OSError:
            self.path = None                   # a read-only cache: keep it in memory


_wisdom: Wisdom | None = None


def wisdom() -> Wisdom:
    global _wisdom
    if _wisdom is None:
        from .kernel_cache import kernel_dir
        m = machine()
        _wisdom = Wisdom(kernel_dir() / "tune" / f"{machine_key(m)}.json")
        _wisdom.machine = m
    return _wisdom


def default_product(M: int, K: int, own_ok: bool) -> str:
    if own_ok and M <= DEFAULT_ROWS and K <= DEFAULT_DEPTH and "avx512f" in cpu_flags():
        return "nt4x4"
    return "blas"


def product_key(dtype, M: int, K: int, ncols: int) -> str:
    # dtype: float products' NumPy dtype, or "packed-int8" / "packed-bf16"
    name = dtype if isinstance(dtype, str) and dtype.startswith("packed-") else \
        np.dtype(dtype).name
    return f"product/{name}/M{bucket(M)}/K{K}/N{ncols}"


def choose_product(x2: np.ndarray, wt: np.ndarray, ncols: int) -> str:
    """The kernel for y[:, c:c+ncols] = x2 @ wt[c:c+ncols].T on one lane: measured (or
    recalled) on this machine, else the default. wt: the output-major weight (N, K)."""
    M, K = x2.shape
    own_ok = wt.flags.c_contiguous and x2.dtype == wt.dtype and x2.dtype.kind == "f"
    if not enabled() or M <= 4:
        return default_product(M, K, own_ok)
    return _winner(product_key(x2.dtype, M, K, ncols),
                   lambda: measure_product(bucket(M), wt[:ncols], x2.dtype, own_ok),
                   usable=lambda best: best == "blas" or own_ok)


def _winner(key: str, measure, usable=lambda best: True) -> str:
    # the class's recorded winner when there is a usable one, else measure() and record it
    w = wisdom()
    best = w.get(key)
    if best is None or not usable(best):
        rates = measure()
        best = max(rates, key=rates.get)
        w.put(key, best, rates)
    return best


def choose_packed_product(x2: np.ndarray, w, c0: int, c1: int) -> str:
    """The kernel gemm_packed runs one lane's share (rows c0:c1) of an int8 / bf16 weight
    with, measured on the packed product itself: float32's winner does not carry over.
    BLAS and the gemm_nt tiles are handed a panel first widened to float32, while the
    micro-kernels widen straight into their own panels (AMD EPYC Zen 3, one thread,
    M = 512, K = 3072, N = 384: float32 through BLAS 75.7 GFLOP/s, through the micro-kernel
    69.6; int8 through BLAS 60.6, through the micro-kernel 67.8)."""
    M, K = x2.shape
    if not enabled() or M <= 4:
        return default_product(M, K, True)
    return _winner(product_key(f"packed-{w.kind}", M, K, c1 - c0),
                   lambda: measure_packed_product(bucket(M), w.data[c0:c1], w.scales[c0:c1]))


_said = False


def measure_product(M: int, wt: np.ndarray, dtype, own_ok: bool) -> dict[str, float]:
    """GFLOP/s of each candidate for x (M, K) @ wt.T, one thread, on this weight."""
    N, K = wt.shape
    x = np.full((M, K), 0.01, dtype)
    y = np.empty((M, N), dtype)
    wt = np.ascontiguousarray(wt)
    calls = {"blas": lambda: np.dot(x, wt.T, y)}
    if own_ok:
        for name, kernel in own_kernels(dtype).items():
            calls[name] = lambda kernel=kernel: kernel(y, x, wt, 0, N)
    return _rates(calls, 2.0 * M * K * N)


def measure_packed_product(M: int, data: np.ndarray, scales: np.ndarray) -> dict[str, float]:
    """GFLOP/s of each kernel gemm_packed may run x (M, K) @ W.T with, W packed as data
    (N, K) and scales, one thread, on this weight."""
    N, K = data.shape
    x = np.full((M, K), 0.01, np.float32)
    y = np.empty((M, N), np.float32)
    calls = {"blas": lambda: k_quant.gemm_packed(y, x, data, scales, 0, N, None)}
    for name, kernel in own_kernels(np.float32).items():
        calls[name] = lambda kernel=kernel: k_quant.gemm_packed(y, x, data, scales, 0, N,
                                                                kernel)
    return _rates(calls, 2.0 * M * K * N)


def _rates(calls: dict, flops: float) -> dict[str, float]:
    # each call timed in turns (A B C A B C ...) by the thread's CPU clock, best of REPEATS
    from .jit import thread_pools
    global _said
    if not _said and os.environ.get("ARCHC_QUIET") != "1":
        _said = True
        print(f"archc: measuring kernels for this CPU ({cpu_model()}), once; "
              "ARCHC_TUNE=0 skips it", file=sys.stderr)
    best: dict[str, float] = {}
    with thread_pools(numba=1, blas=1):
        for fn in calls.values():
            fn()                                   # compiled, caches warm
        for rep in range(REPEATS):
            for name, fn in calls.items():
                if rep and best[name] > MAX_SECONDS:
                    continue
                t = time.thread_time()
                fn()
                dt = max(time.thread_time() - t, 1e-9)
                best[name] = min(best.get(name, dt), dt)
    return {name: flops / dt / 1e9 for name, dt in best.items()}


def kernel_report(prog) -> list[tuple[str, str, str, str, str]]:
    """(node, op, product shape, kernel, GFLOP/s measured on this machine or "-") for each
    matrix product a program runs, one row per lane's share: what `archc tune` prints."""
    tiles = {v: k for k, v in KERNELS.items()}
    rows = []
    w = wisdom() if enabled() else None
    for s in prog.steps:
        if not trait(s.op, "weight_args"):
            continue                            # attention's per-head products, copies
        for fn, args in prog.step_calls(s):
            if fn in tiles:
                y, x, wt, c0, c1 = args
                M, K, N, kernel = x.shape[0], x.shape[1], c1 - c0, tiles[fn]
            elif fn is np.dot or fn is np.matmul:
                a, out = args[0], args[2]
                M, K, N, kernel = a.shape[0], a.shape[1], out.shape[-1], "blas"
            elif fn is k_linalg.gemv_t:
                M, K, N, kernel = args[1].shape[0], args[1].shape[1], args[0].shape[1], "gemv_t"
            elif fn is k_quant.gemm_packed:          # (y, x, data, scales, c0, c1, kernel)
                M, K, N = args[1].shape[0], args[1].shape[1], args[5] - args[4]
                kernel = "blas" if args[6] is None else tiles[args[6]]
            elif fn is k_quant.gemv_packed:
                M, K, N, kernel = args[1].shape[0], args[1].shape[1], args[0].shape[1], "gemv"
            else:
                continue
            packed = fn in (k_quant.gemm_packed, k_quant.gemv_packed)
            dtype = f"packed-{kind_of(args[2])}" if packed else \
                args[1].dtype if fn in tiles else args[0].dtype
            rate = "-"
            if w is not None and kernel not in ("gemv_t", "gemv"):
                e = w.entries.get(product_key(dtype, M, K, N))
                if isinstance(e, dict) and kernel in e.get("gflops", {}):
                    rate = f"{e['gflops'][kernel]:.0f}"
            if packed:
                kernel += f" ({dtype[len('packed-'):]})"
            rows.append((s.node, s.op, f"({M}, {K}) x {N}", kernel, rate))
    return rows
