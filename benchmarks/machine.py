"""The machine's limits, measured on the spot: large-array read bandwidth and sgemm rate.

    python benchmarks/machine.py --threads 2          # prints one JSON line

Decoding one token reads every weight once, so read bandwidth bounds decode tokens/s;
prefill is matrix products, so the sgemm rate bounds prefill tokens/s. Each figure is the
best of a few repeats (a limit is what the machine can do, not what it did on average).

Thread counts are fixed through the environment before NumPy/Numba load, so run this as
its own process (`limits(threads)` does that for you).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")


def user_env(base: dict | None = None) -> dict:
    """The environment as a user's process has it: Python's bytecode cache on. A sandbox
    may set PYTHONDONTWRITEBYTECODE (this one does); then every process of an editable
    checkout compiles archc's ~90 modules from source again, 0.16 s here, which an installed
    package (its .pyc written at install) or a plain checkout never pays."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def thread_env(threads: int, base: dict | None = None) -> dict:
    env = user_env(base)
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def run_with_threads(threads: int) -> None:
    """Restart this script with every thread variable set to `threads` unless they already
    are: thread pools are sized when NumPy and Numba load, so it must happen before."""
    if any(os.environ.get(v) != str(threads) for v in THREAD_VARS):
        os.execve(sys.executable, [sys.executable] + sys.argv, thread_env(threads))


def read_bandwidth(mb: int = 1024, repeats: int = 5) -> float:
    """Bytes/s reading a float32 array of `mb` MB with every Numba thread."""
    import numpy as np
    from numba import njit, prange

    # fastmath lets LLVM vectorise the sum; a slice per block keeps the inner loop simple
    # enough to vectorise (a min() in the bound does not) and each thread on one run
    @njit(parallel=True, fastmath=True, cache=False)
    def block_sums(x, out):
        nb = out.shape[0]
        step = x.shape[0] // nb
        for b in prange(nb):
            blk = x[b * step:(b + 1) * step]
            s = np.float32(0.0)
            for i in range(blk.shape[0]):
                s += blk[i]
            out[b] = s

    x = np.ones(mb * (1 << 20) // 4, np.float32)      # touched, so pages are resident
    out = np.empty(256, np.float32)
    block_sums(x[:4096], out)                          # compile (size: a multiple of 256)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        block_sums(x, out)
        best = min(best, time.perf_counter() - t)
    if abs(float(out.sum()) - x.shape[0]) > 1e-3 * x.shape[0]:
        raise RuntimeError("bandwidth kernel summed wrongly")
    return x.nbytes / best


def sgemm_rate(n: int = 3072, repeats: int = 3) -> float:
    """FLOP/s of NumPy's float32 matmul (n x n) @ (n x n)."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a[:256, :256], b[:256, :256])            # BLAS threads up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def limits(threads: int, mb: int = 1024, n: int = 3072) -> dict:
    """Measure in a fresh process with `threads` threads; {"bandwidth": B/s, "sgemm": FLOP/s}."""
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--mb", str(mb),
                          "--n", str(n)], env=thread_env(threads), capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"machine.py failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--mb", type=int, default=1024, help="array size for the bandwidth test")
    ap.add_argument("--n", type=int, default=3072, help="matrix size for the sgemm test")
    args = ap.parse_args()
    if os.environ.get("NUMBA_NUM_THREADS") != str(args.threads):
        print(json.dumps(limits(args.threads, args.mb, args.n)))
        return
    res = {"threads": args.threads, "bandwidth": read_bandwidth(args.mb),
           "sgemm": sgemm_rate(args.n)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
