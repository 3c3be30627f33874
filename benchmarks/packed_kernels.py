"""The packed-weight products (runtime/kernels/_quant.py) against the float32 ones, one
thread, on GPT-2 small's matrices.

    python benchmarks/packed_kernels.py            # decode (M = 1) and prompt (M = 128)
    python benchmarks/packed_kernels.py --rows 1,4 --prompt 128,512 --repeat 31

Decode: weight bytes read per second by the matrix-vector kernels (float32 gemv_t, int8,
bf16) over the 49 matrices a GPT-2 small decode step streams (~495 MB in float32, ~140 MB
in int8: far past the L3, so this is read bandwidth), and the speed-up in weights per
second over float32. Prompt: GFLOP/s of each matrix shape through OpenBLAS and gemm_nt's
tiles, float32 and int8 (widened a panel at a time, then the same kernel). Times are
`time.thread_time()`, min of N runs: CPU time of this thread, which another process taking
the core does not inflate (on a busy machine the wall clock does), interleaved so the
contenders see the same machine.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

# GPT-2 small: (K, N) of each layer's products (QKV, attention out, MLP up, down), x12, and
# the tied LM head
LAYER = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]
HEAD = (768, 50257)


def best(calls: dict, repeat: int) -> dict:
    """Min thread time of each call, the calls interleaved round by round."""
    for fn in calls.values():
        fn()
    out = {k: float("inf") for k in calls}
    for _ in range(repeat):
        for k, fn in calls.items():
            t = time.thread_time()
            fn()
            out[k] = min(out[k], time.thread_time() - t)
    return out


def decode(rows: int, repeat: int, rng) -> None:
    from archc.runtime.kernels import _quant as kq, linalg as kl
    shapes = LAYER * 12 + [HEAD]
    mats = []
    for K, N in shapes:
        w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)       # (N, K) = W^T
        q = np.empty((N, K), np.int8)
        s = np.empty((N, -(-K // kq.BLOCK)), np.float32)
        kq.pack_int8(q, s, w)
        bits = np.empty((N, K), np.uint16)
        kq.pack_bf16(bits, w)
        mats.append((w, q, s, bits))
    x = {K: rng.standard_normal((rows, K)).astype(np.float32) for K, _ in shapes}
    y = {N: np.empty((rows, N), np.float32) for _, N in shapes}
    zero = {N: np.zeros(N, np.float32) for _, N in shapes}
    none = {N: np.empty((N, 0), np.float32) for _, N in shapes}       # bf16: no scales

    def run(kind):
        def step():
            for (K, N), (w, q, s, bits) in zip(shapes, mats):
                if kind == "float32":
                    kl.gemv_t(y[N], x[K], w, zero[N], 0, 1)
                elif kind == "int8":
                    kq.gemv_packed(y[N], x[K], q, s, zero[N], 0, 1)
                else:
                    kq.gemv_packed(y[N], x[K], bits, none[N], zero[N], 0, 1)
        return step

    bytes_ = {"float32": sum(m[0].nbytes for m in mats),
              "int8": sum(m[1].nbytes + m[2].nbytes for m in mats),
              "bf16": sum(m[3].nbytes for m in mats)}
    t = best({k: run(k) for k in bytes_}, repeat)
    weights = sum(K * N for K, N in shapes)
    print(f"decode, M = {rows}: one step's 49 matrices ({weights / 1e6:.0f} M weights)")
    for k in bytes_:
        print(f"  {k:<8} {bytes_[k] / 1e6:7.0f} MB  {t[k] * 1e3:7.2f} ms  "
              f"{bytes_[k] / t[k] / 1e9:5.1f} GB/s  {weights / t[k] / 1e9:5.2f} Gweights/s  "
              f"x{t['float32'] / t[k]:.2f} vs float32")


def prompt(M: int, repeat: int, rng) -> None:
    from archc.runtime.kernels import _quant as kq, linalg as kl
    print(f"prompt, M = {M}: GFLOP/s per matrix shape, float32 and int8 through each kernel "
          "(int8: widened a panel at a time)")
    for K, N in LAYER:
        w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
        q = np.empty((N, K), np.int8)
        s = np.empty((N, -(-K // kq.BLOCK)), np.float32)
        kq.pack_int8(q, s, w)
        x = rng.standard_normal((M, K)).astype(np.float32)
        y = np.empty((M, N), np.float32)
        calls = {"f32 blas": lambda: np.dot(x, w.T, out=y),
                 "int8 blas": lambda: kq.gemm_packed(y, x, q, s, 0, N, None)}
        for name, tile in kl.TILES.items():
            calls[f"f32 {name}"] = lambda tile=tile: tile(y, x, w, 0, N)
            calls[f"int8 {name}"] = lambda tile=tile: kq.gemm_packed(y, x, q, s, 0, N, tile)
        t = best(calls, repeat)
        flops = 2.0 * M * K * N
        print(f"  K={K:<5} N={N:<5} " + "  ".join(f"{k} {flops / v / 1e9:4.0f}"
                                                 for k, v in t.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1", help="decode rows (batch), comma-separated")
    ap.add_argument("--prompt", default="128", help="prompt rows, comma-separated")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    from archc.runtime import jit
    from archc.runtime.tune import cpu_model
    jit.set_threads(1)
    print(f"{cpu_model()}, {os.cpu_count()} cores; numpy {np.__version__}; one thread, "
          f"min of {args.repeat} thread-time runs")
    rng = np.random.default_rng(0)
    for m in (int(v) for v in args.rows.split(",") if v):
        decode(m, args.repeat, rng)
    for m in (int(v) for v in args.prompt.split(",") if v):
        prompt(m, args.repeat, rng)


if __name__ == "__main__":
    main()
