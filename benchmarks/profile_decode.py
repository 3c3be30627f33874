"""Where a decode step's time goes: archc's per-op profile and a cProfile of the Python side.

    python benchmarks/profile_decode.py                       # GPT-2 small, 2 threads
    python benchmarks/profile_decode.py --family llama --threads 1 --steps 32

Random weights (archc's seed; numbers do not depend on the values). A prefill of --prompt
tokens fills the cache; then --steps decode steps run twice: once under the executor's
per-op profile (time per graph op, Python dispatch included), once under cProfile (which
Python functions and kernels the time is spent in). The per-token figure beside them is
steps/s without any profiler, and the decode bound is weight bytes / read bandwidth
(benchmarks/machine.py).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from contenders import FAMILIES, ROOT, prompt_ids, weight_read_bytes  # noqa: E402
from machine import run_with_threads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=FAMILIES, default="gpt2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--top", type=int, default=20, help="cProfile rows to show")
    args = ap.parse_args()
    run_with_threads(args.threads)

    import numpy as np
    import archc
    from archc.runtime.executor import Profile
    from archc.runtime.kv_cache import Session

    spec = FAMILIES[args.family]
    config = spec["archc_tiny" if args.tiny else "archc_full"] or None
    model = archc.load(ROOT / spec["arch"], config=config)
    ex = model.compiled(args.threads)
    g = model.graph
    vocab = int(g.node(g.outputs["logits"]).shape[-1])
    ids_name = g.node(g.inputs[0]).attrs["name"]
    ids = prompt_ids(vocab, args.prompt, 0)
    max_seq = args.prompt + 3 * args.steps + 2

    # the loop model.generate runs, minus sampling options: greedy on the last logits
    def decode(session, steps, profile=None):
        tok = np.zeros((1, 1), np.int64)
        out = session.forward({ids_name: ids}, {"B": 1, "T": args.prompt})
        tok[0, 0] = int(np.argmax(out["logits"][0, -1]))
        t = time.perf_counter()
        for _ in range(steps):
            out = session.forward({ids_name: tok}, {"B": 1, "T": 1}, profile)
            tok[0, 0] = int(np.argmax(out["logits"][0, -1]))
        return time.perf_counter() - t

    session = Session(ex, 1, max_seq)
    decode(session, 2)                                   # compile, build the programs
    session.reset()
    plain = decode(session, args.steps)
    print(f"{args.family}{' (tiny)' if args.tiny else ''}, {args.threads} thread(s): "
          f"{args.steps / plain:.1f} decode tokens/s after a {args.prompt}-token prompt "
          f"({plain / args.steps * 1e3:.2f} ms per step); weights read per step "
          f"{weight_read_bytes(g) / 1e6:.0f} MB; steps per token "
          f"{len(ex.program({'B': 1, 'T': 1}, session).steps)}")

    session.reset()
    prof = Profile()
    decode(session, args.steps, prof)
    print(f"\narchc per-op profile of {args.steps} decode steps (Python dispatch included):")
    print(prof.table())

    session.reset()
    cp = cProfile.Profile()
    cp.enable()
    decode(session, args.steps)
    cp.disable()
    buf = io.StringIO()
    pstats.Stats(cp, stream=buf).sort_stats("tottime").print_stats(args.top)
    lines = buf.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    print(f"\ncProfile of {args.steps} decode steps, by own time:")
    print("\n".join(line[:150] for line in lines[start:]))


if __name__ == "__main__":
    main()
