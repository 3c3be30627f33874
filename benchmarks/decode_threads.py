"""Decode and prefill speed of the compiled executor at 1 and 2 threads (random weights).

    python benchmarks/decode_threads.py [--layers 4] [--tokens 32] [--prompt 64]

A rough script for the runtime's own numbers; the side-by-side PyTorch comparison is
issue 6's benchmark. The machine is shared: compare numbers from the same run only.
"""
import argparse
import time

import numpy as np

import archc
from archc.runtime.generate import generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="examples/gpt2.arch")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=64)
    a = ap.parse_args()
    model = archc.load(a.model, config={"n_layer": a.layers})
    prompt = np.random.default_rng(0).integers(0, 1000, (1, a.prompt))
    for threads in (1, 2, 1, 2):
        ex = model.compiled(threads)
        generate(ex, prompt, 2)                                   # compile + warm up
        res = generate(ex, prompt, a.tokens)
        print(f"threads={threads}: prefill {a.prompt / res.prefill_seconds:7.1f} tokens/s, "
              f"decode {res.tokens_per_second:6.1f} tokens/s")


if __name__ == "__main__":
    t = time.time()
    main()
    print(f"({time.time() - t:.1f} s)")
