"""Where a prefill pass's time goes: every step timed, grouped by op and kernel, with the
matrix products' FLOP rate against the machine's sgemm rate.

    python benchmarks/profile_prefill.py                          # GPT-2 small, T=128, 2 threads
    python benchmarks/profile_prefill.py --family llama --T 512 --threads 1

Random weights (archc's seed). The program for (B=1, T) is built and warmed, then run
--runs times with each step timed (a lane step is timed whole: its lanes run at once). A
row is one op and the kernel it runs (for products: the kernel and the product's shape);
GFLOP/s counts the products' multiply-adds, 2*M*K*N. The sgemm rate is NumPy's float32
(3072 x 3072) product at the same thread count, measured in a fresh process
(benchmarks/machine.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from contenders import FAMILIES, ROOT, prompt_ids  # noqa: E402
from machine import limits, run_with_threads  # noqa: E402


def product_flops(fn, args) -> float:
    """2*M*K*N of one call when it is a matrix product, else 0."""
    import numpy as np
    from archc.runtime.tune import KERNELS
    if fn in KERNELS.values():                       # (y, x, wt, n0, n1)
        return 2.0 * args[1].shape[0] * args[1].shape[1] * (args[4] - args[3])
    if fn is np.dot or fn is np.matmul:              # (a, b, out)
        a, out = args[0], args[2]
        return 2.0 * out.size * a.shape[-1]
    return 0.0


def describe(fn, args) -> str:
    import numpy as np
    from archc.runtime.tune import KERNELS
    name = getattr(fn, "__name__", type(fn).__name__)
    if fn in KERNELS.values():
        return f"{name} ({args[1].shape[0]}, {args[1].shape[1]}) x {args[4] - args[3]}"
    if fn is np.dot or fn is np.matmul:
        return f"{name} {tuple(args[0].shape)} x {tuple(args[1].shape)}"
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=FAMILIES, default="gpt2")
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--top", type=int, default=14, help="rows to show")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    run_with_threads(args.threads)

    import numpy as np
    import archc
    from archc.runtime import jit

    spec = FAMILIES[args.family]
    model = archc.load(ROOT / spec["arch"],
                       config=spec["archc_tiny" if args.tiny else "archc_full"] or None)
    ex = model.compiled(args.threads)
    g = model.graph
    vocab = int(g.node(g.outputs["logits"]).shape[-1])
    prog = ex.program({"B": 1, "T": args.T})
    prog.compile()
    prog.execute({g.node(g.inputs[0]).attrs["name"]: prompt_ids(vocab, args.T, 0)})
    prog.execute()

    seconds: dict[tuple, float] = defaultdict(float)
    calls: dict[tuple, int] = defaultdict(int)
    flops: dict[tuple, float] = defaultdict(float)
    walls = []
    clock = time.perf_counter
    with jit.thread_pools(numba=prog.numba_threads, blas=prog.blas_threads):
        for _ in range(args.runs):
            start = clock()
            for s in prog.steps:
                inner = prog.step_calls(s)
                shared = ex.lanes is not None and s.fn == ex.lanes.run_shared
                laned = ex.lanes is not None and ex.lanes.is_lane_step(s.fn)
                cut = f" in {len(s.args[0])} items" if shared else \
                    f" in {len(s.args[0])} lanes" if laned else ""
                key = (s.op, describe(*inner[0]) + cut)
                t = clock()
                s.fn(*s.args)
                seconds[key] += clock() - t
                calls[key] += 1
                flops[key] += sum(product_flops(fn, a) for fn, a in inner)
            walls.append(clock() - start)
    n = args.runs
    total = sum(seconds.values()) / n
    print(f"{args.family}{' (tiny)' if args.tiny else ''}, T={args.T}, {args.threads} "
          f"thread(s): {args.T / np.median(walls):.0f} tokens/s "
          f"({np.median(walls) * 1e3:.1f} ms a pass, steps timed one by one)\n")
    print(f"{'op':<16} {'kernel':<46} {'calls':>5} {'ms/pass':>8} {'share':>6} {'GFLOP/s':>8}")
    for key in sorted(seconds, key=lambda k: -seconds[k])[:args.top]:
        sec = seconds[key] / n
        rate = f"{flops[key] / n / sec / 1e9:8.0f}" if flops[key] else ""
        print(f"{key[0]:<16} {key[1][:46]:<46} {calls[key] // n:>5} {sec * 1e3:8.2f} "
              f"{sec / total:6.1%} {rate:>8}")
    prod_s = sum(seconds[k] for k in seconds if flops[k]) / n
    prod_f = sum(flops.values()) / n
    sgemm = limits(args.threads, mb=64)["sgemm"]
    print(f"\nsteps with matrix products (attention's included): {prod_s / total:.1%} of the "
          f"pass, {prod_f / 1e9:.1f} GFLOP at {prod_f / prod_s / 1e9:.0f} GFLOP/s = "
          f"{prod_f / prod_s / sgemm:.0%} of the {sgemm / 1e9:.0f} GFLOP/s sgemm rate measured "
          f"now; every other step {(total - prod_s) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
