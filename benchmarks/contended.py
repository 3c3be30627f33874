"""archc on a busy machine: default threads vs 1 vs every core, with a competing load.

    python benchmarks/contended.py                 # GPT-2 small, random weights (~4 min)
    python benchmarks/contended.py --rounds 5 --new 64

Each round runs, alternating, `archc generate` (decode tokens/s after a 4-token prompt)
and a T=128 prefill (`archc run --profile`, the timed pass) with the default thread count,
`--threads 1` and `--threads N` (every core), first on the quiet machine, then with one
CPU-bound process (a Python busy loop) running beside it. The figure that matters is the
default's ratio to one thread under load: below 1.0 the default is worse than not
threading at all. Kernels are compiled in an untimed first call. Every contender of
benchmarks/lm.py (ONNX Runtime, llama.cpp, PyTorch) under the same load:
`python benchmarks/lm.py --contended`.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "examples" / "gpt2.arch")
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import start_load  # noqa: E402


def archc(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "archc", *args], capture_output=True, text=True,
                       cwd=ROOT)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    return p.stderr


def decode_rate(prompt: str, new: int, threads: list[str]) -> float:
    err = archc("generate", MODEL, "-i", prompt, "-n", str(new), *threads)
    return float(re.search(r"decode ([\d.]+) tokens/s", err).group(1))


def prefill_ms(ids: str, threads: list[str]) -> float:
    err = archc("run", MODEL, "-i", ids, "--profile", *threads)
    return float(re.search(r"^total\s+\d+\s+([\d.]+)", err, re.M).group(1))


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new", type=int, default=48, help="tokens to decode")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    settings = {"default": [], "1 thread": ["--threads", "1"],
                f"{cores} threads": ["--threads", str(cores)]}
    tmp = Path(tempfile.mkdtemp(prefix="archc-contended-"))
    prompt, ids = str(tmp / "prompt.npy"), str(tmp / "ids.npy")
    np.save(prompt, np.array([[464, 3290, 318, 257]]))
    np.save(ids, np.random.default_rng(0).integers(0, 50257, (1, 128)))
    decode_rate(prompt, 2, [])                        # compile (untimed)
    print(f"GPT-2 small, random weights; {cores} cores; {args.rounds} rounds, alternating")
    for loaded in (False, True):
        load = start_load() if loaded else None
        try:
            dec = {k: [] for k in settings}
            pre = {k: [] for k in settings}
            for _ in range(args.rounds):
                for name, flags in settings.items():
                    dec[name].append(decode_rate(prompt, args.new, flags))
                    pre[name].append(prefill_ms(ids, flags))
        finally:
            if load is not None:
                load.kill()
        print(f"\n{'with one competing process' if loaded else 'quiet machine'}:")
        print(f"{'setting':<12} {'decode tok/s':>22} {'prefill T=128 ms':>22}")
        for name in settings:
            print(f"{name:<12} {spread(dec[name]):>22} {spread(pre[name]):>22}")
        one = "1 thread"
        r_dec = [a / b for a, b in zip(dec["default"], dec[one])]
        r_pre = [b / a for a, b in zip(pre["default"], pre[one])]
        print(f"default / 1 thread, round by round: decode {spread(r_dec)}, "
              f"prefill speed {spread(r_pre)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
